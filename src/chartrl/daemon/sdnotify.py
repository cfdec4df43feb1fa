"""The systemd notify protocol, by hand: datagrams to $NOTIFY_SOCKET.

``Type=notify`` units learn from these messages when the daemon is ready (``READY=1``), that it is
alive (``WATCHDOG=1``, at least every ``WatchdogSec``), what it is doing (``STATUS=...``) and that it
is going away (``STOPPING=1``). Without systemd ($NOTIFY_SOCKET unset) every call is a no-op, so the
same code runs in a terminal, in tests and under systemd. A socket path starting with ``@`` is in
the Linux abstract namespace: the ``@`` becomes a NUL byte.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from chartrl.logs import get_logger

log = get_logger("chartrl.daemon.sdnotify")


class Notifier:
    """Sends sd_notify messages; silent and harmless when not started by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (``notify(READY=1, STATUS='x')``); True when sent."""
        if self.address is None:
            return False
        # A newline inside STATUS would start a new (bogus) assignment; systemd reads one per line.
        msg = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg.encode("utf-8", "replace"), self.address)
            return True
        except OSError as exc:
            # systemd gone or socket unwritable: trading must not stop for it; say so once.
            if not self._warned:
                log.warning(
                    "sd_notify_failed",
                    error=str(exc),
                    socket=self.address if isinstance(self.address, str) else "@abstract",
                )
                self._warned = True
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(raw: str) -> str | bytes | None:
    if not raw:
        return None
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    # vsock:... and other transports are not supported; better no-op than crash at start-up.
    log.warning("sd_notify_unsupported_socket", socket=raw)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    # WATCHDOG_PID names the process systemd expects pings from; another process must not ping.
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec if usec > 0 else None


def heartbeat_interval(notifier: Notifier, configured_seconds: float) -> float:
    """Seconds between WATCHDOG=1: the configured heartbeat, but at most half of WatchdogSec."""
    if notifier.watchdog_usec:
        return min(configured_seconds, notifier.watchdog_usec / 2e6)
    return configured_seconds
