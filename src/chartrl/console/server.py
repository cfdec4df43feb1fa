"""Run the console with uvicorn: in the foreground (``chartrl serve``) or beside the daemon
(``[console] enabled = true`` in ``chartrl run``), in a thread of its own.

Beside the daemon it follows the daemon's SIGHUP reload (:func:`follow`): ``[console]`` and every
setting the console reads take effect without restarting the daemon. A new token, token file or
any other setting swaps the application under the same listener (the old token is refused from
the next request on); ``enabled`` starts or stops the console; a new ``host`` or ``port`` moves
the listener. A change that cannot be applied (a port in use, a public address without a token)
is logged as ``console_reload_failed`` and the console serves on as it was; trading is untouched.
``chartrl serve`` in the foreground reads its settings once: restart it.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from chartrl.config.settings import Settings
from chartrl.console.auth import check_bind, resolve_token
from chartrl.errors import ChartrlError, UsageError
from chartrl.logs import get_logger

log = get_logger("chartrl.console")


class _Switch:
    """The ASGI application uvicorn serves: the current console app, which a reload replaces.
    A request in flight finishes on the app it started on."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class Console:
    """A bound, not yet started console: the socket is listening, the token resolved."""

    def __init__(self, settings: Settings, host: str | None = None, port: int | None = None):
        import uvicorn

        from chartrl.console.app import create_app, warm_static

        host = host or settings.console.host
        port = settings.console.port if port is None else port
        if not 0 <= port < 65536:
            raise UsageError(f"--port {port} must be between 1 and 65535")
        self.host, self.settings = host, settings
        token, self.token_file = resolve_token(settings, host)
        # The model and chart pages need torch: import it (seconds) now, not in the first request.
        import chartrl.chart.tensor_render  # noqa: F401
        import chartrl.train.checkpoint  # noqa: F401

        warm_static()

        # Bound here, not inside uvicorn: a port in use is one clear line, not a log and exit(3).
        try:
            self.sock = socket.create_server(
                (host.strip("[]"), port), family=_family(host), reuse_port=False
            )
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port "
                "or stop what is using it"
            ) from None
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{self.port}/"
        self.app = _Switch(create_app(settings, token))
        self.thread: threading.Thread | None = None
        # log_config=None: uvicorn's records go through our structlog handlers (JSON, redacted).
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            server_header=False,
            lifespan="off",  # the app has no start-up or shut-down of its own
        )
        self.server = uvicorn.Server(config)

    def swap(self, settings: Settings) -> None:
        """Serve ``settings`` (a new token among them) from the next request on, same listener."""
        from chartrl.console.app import create_app

        token, self.token_file = resolve_token(settings, self.host)
        self.app.app = create_app(settings, token)
        self.settings = settings

    def announce(self) -> None:
        where = (
            f"read the token from {self.token_file}"
            if self.token_file
            else "log in with console.token"
        )
        log.info("console_serving", url=self.url, login=where)

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (main thread) or :meth:`stop`."""
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def start_in_thread(self) -> threading.Thread:
        """Serve beside the daemon (uvicorn leaves signals alone outside the main thread)."""
        self.thread = threading.Thread(target=self.run, name="console", daemon=True)
        self.thread.start()
        return self.thread

    def stop(self, wait: float = 0.0) -> None:
        """Ask uvicorn to stop; ``wait``: seconds to wait for the listener to be closed."""
        self.server.should_exit = True
        if wait and self.thread is not None:
            self.thread.join(wait)


def follow(console: Console | None, settings: Settings) -> Console | None:
    """The daemon's console after a reload to ``settings``: started, stopped, moved or its app
    swapped, as ``[console]`` now says. Never raises: what cannot be done is logged and the
    console is left serving as it was (trading goes on whatever the console does)."""
    c = settings.console
    try:
        if not c.enabled:
            if console is not None:
                console.stop(wait=10)
                log.info("console_stopped", reason="console.enabled = false after a reload")
            return None
        if console is not None and (console.host, console.port) == (c.host, c.port):
            console.swap(settings)
            log.info("console_reloaded", url=console.url)
            return console
        check_bind(c.host, c.token is not None)  # before anything is stopped
        try:
            moved = Console(settings)  # bound before the old one stops: no gap on a failure
        except UsageError:
            if console is None or console.port != c.port:
                raise
            # 127.0.0.1:P to 0.0.0.0:P overlaps the old listener: free it first, restore on failure.
            console.stop(wait=10)
            try:
                moved = Console(settings)
            except UsageError:
                console = Console(console.settings, console.host, console.port)
                console.start_in_thread()
                raise
        else:
            if console is not None:
                console.stop(wait=10)
        moved.start_in_thread()
        moved.announce()
        return moved
    except (ChartrlError, OSError) as exc:
        kept = console.url if console is not None else "no console"
        log.error("console_reload_failed", error=str(exc), kept=kept)
        return console


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
