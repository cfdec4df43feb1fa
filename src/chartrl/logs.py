"""Structured logging: JSON lines under systemd or in a pipe, readable key=value in a terminal.

Every event goes through :func:`redact`, which masks values under secret-looking keys and any
registered secret value wherever it appears in a string, so a key never reaches a log.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

_SECRET_KEY = re.compile(
    r"(api[_-]?key|access[_-]?key|secret|password|passphrase|token|signature|private[_-]?key|apikey|authorization"
    r"|credential|cookie|^key$)",
    re.I,
)
# Query-string, header or JSON style secrets in free text (e.g. a URL or body ccxt put into an error
# message). An "Authorization: Bearer X" value is masked whole, scheme word included.
_SECRET_IN_TEXT = re.compile(
    r"(?i)((?:api[_-]?key|access[_-]?key|secret|signature|password|passphrase|token|credentials?|authorization"
    r"|x-mbx-apikey|\bkey)[\"']?\s*[=:]\s*[\"']?)((?:(?:bearer|basic)\s+)?[^&\s\"',}]+)"
)
# A bearer token or a PEM private key seen without a name in front of it.
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_PEM_KEY = re.compile(
    r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
)
_REDACTED = "***"
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Make ``value`` be masked wherever it appears in a log event from now on."""
    if value and len(value) >= 4:
        _secrets.add(value)


def _mask_text(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    text = _PEM_KEY.sub(lambda m: f"-----BEGIN {m.group(1)}PRIVATE KEY-----{_REDACTED}", text)
    text = _SECRET_IN_TEXT.sub(lambda m: m.group(1) + _REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + _REDACTED, text)


def one_line_error(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line`` of an exception, secrets masked, at most ``limit`` characters.

    ccxt and HTTP errors carry whole response bodies (HTML pages, signed URLs) in their message.
    """
    text = _mask_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mask(key: str | None, value: Any) -> Any:
    if key is not None and _SECRET_KEY.search(key) and value not in (None, "", False):
        return _REDACTED
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, dict):
        return {k: _mask(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask(None, v) for v in value)
    if value.__class__.__name__ == "SecretStr":
        return _REDACTED
    return value


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask secrets in every field (the event text included)."""
    return {k: (_mask(None, v) if k == "event" else _mask(k, v)) for k, v in event_dict.items()}


def _stringify_exc(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # Exceptions are rendered to text before redaction so secrets inside them are masked too.
    if "exc_info" in event_dict:
        event_dict = structlog.processors.format_exc_info(_logger, _method, event_dict)
    return event_dict


class _Stdout:
    """Whatever ``sys.stdout`` is at write time (not at configure time: a test runner swaps it)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return sys.stdout.isatty()


def configure_logging(level: str = "info", fmt: LogFormat = "auto", stream: Any = None) -> None:
    """Set up structlog (and route the stdlib loggers of ccxt, apscheduler... through it)."""
    stream = stream or _Stdout()
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        from chartrl.errors import UsageError

        raise UsageError(f"--log-level {level!r} is not a level; use debug, info, warning or error")
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=getattr(stream, "isatty", lambda: False)())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _stringify_exc,
        redact,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Third-party libraries are chatty at INFO; keep them one notch quieter than ours.
    root.setLevel(max(numeric, logging.WARNING) if numeric < logging.WARNING else numeric)


def get_logger(name: str | None = None, **bind: Any) -> Any:
    """A structlog logger; ``name`` becomes the ``logger`` field."""
    from structlog._config import BoundLoggerLazyProxy

    if name:
        bind = {"logger": name, **bind}
    # A lazy proxy carrying the initial values: ``structlog.get_logger().bind()`` would build the
    # logger from today's config, so a module-level logger would ignore a later configure_logging().
    # (structlog.get_logger(logger=...) is not possible: it clashes with wrap_logger's parameter.)
    return BoundLoggerLazyProxy(None, initial_values=bind)
