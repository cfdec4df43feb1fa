"""The console's bearer token: where it comes from, how it is checked, and where it may be served.

The token is a secret like the exchange keys (invariant 6): ``CHARTRL__CONSOLE__TOKEN`` or
``console.token_file`` (0600, ``token = "..."``), read by the config loader into a SecretStr and
registered with the log masker. Without one, the console serves only on a loopback address and
makes its own: a random token in ``<data dir>/console.token`` (0600), whose path, never its
value, it prints. Every comparison is constant-time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from chartrl.config.settings import Settings
from chartrl.errors import UsageError

AUTO_TOKEN_FILE = "console.token"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, configured: bool) -> None:
    """Refuse a non-loopback address without a configured token, and say why."""
    if not configured and not is_loopback(host):
        raise UsageError(
            f"refusing to serve the console on {host} without a token: anyone who can reach that "
            "address could read the book and halt trading. Set CHARTRL__CONSOLE__TOKEN or "
            'console.token_file (a 0600 file with token = "..."), or bind 127.0.0.1'
        )


def resolve_token(settings: Settings, host: str) -> tuple[str, Path | None]:
    """(token, path of the file the operator reads it from when it was generated here, else None)."""
    configured = settings.console.token
    check_bind(host, configured is not None)
    if configured is not None:
        return configured.get_secret_value(), None
    path = settings.data_dir / AUTO_TOKEN_FILE
    token = _read_auto(path)
    if token is None:
        token = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f'token = "{token}"\n')
    from chartrl.logs import register_secret

    register_secret(token)
    return token, path


def _read_auto(path: Path) -> str | None:
    from chartrl.config.loader import read_key_file

    if not path.is_file():
        return None
    token = read_key_file(path, "the console's own token file", frozenset({"token"})).get("token")
    return token or None


def token_matches(expected: str, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``expected`` as its bearer token."""
    if not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())
