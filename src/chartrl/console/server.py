"""Run the console with uvicorn: in the foreground (``chartrl serve``) or beside the daemon
(``[console] enabled = true`` in ``chartrl run``), in a thread of its own."""

from __future__ import annotations

import socket
import threading

from chartrl.config.settings import Settings
from chartrl.console.auth import resolve_token
from chartrl.errors import UsageError
from chartrl.logs import get_logger

log = get_logger("chartrl.console")


class Console:
    """A bound, not yet started console: the socket is listening, the token resolved."""

    def __init__(self, settings: Settings, host: str | None = None, port: int | None = None):
        import uvicorn

        from chartrl.console.app import create_app, warm_static

        host = host or settings.console.host
        port = settings.console.port if port is None else port
        if not 0 <= port < 65536:
            raise UsageError(f"--port {port} must be between 1 and 65535")
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
        # log_config=None: uvicorn's records go through our structlog handlers (JSON, redacted).
        config = uvicorn.Config(
            create_app(settings, token),
            log_config=None,
            access_log=False,
            server_header=False,
        )
        self.server = uvicorn.Server(config)

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
        thread = threading.Thread(target=self.run, name="console", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.server.should_exit = True


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
