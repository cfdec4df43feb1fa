"""chartrl serve: the operator's console (dashboard, JSON API, /metrics) over the data dir."""

from __future__ import annotations

import argparse
import signal

from chartrl.cli.app import settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the console: dashboard, JSON API and /metrics (read-only, token required)",
        description="Serve the console over the data dir (read-only, except halts). Every page "
        "but /healthz needs console.token (CHARTRL__CONSOLE__TOKEN or console.token_file); "
        "without one it serves on loopback only, with a token of its own in <data dir>/console.token.",
    )
    p.add_argument("--host", help="address to bind (default: console.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default: console.port, 8787)")
    p.add_argument(
        "--data-dir", help="data directory (default: $CHARTRL_DATA_DIR, else config data.dir)"
    )
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from chartrl.console.server import Console

    console = Console(settings(args), args.host, args.port)
    console.announce()
    print(f"console at {console.url} ({_login(console)}); Ctrl-C stops it", flush=True)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it under the handler it found:
    # this one makes a stop by systemd (or kill) an exit 0, not a death by signal.
    signal.signal(signal.SIGTERM, _stopped)
    console.run()
    return 0


def _stopped(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _login(console) -> str:  # noqa: ANN001 - chartrl.console.server.Console (lazy import)
    if console.token_file:
        return f"log in with the token in {console.token_file}"
    return "log in with console.token"
