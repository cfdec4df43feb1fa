"""The ``chartrl`` command. Errors a user can act on are one line on stderr, never a traceback."""

from __future__ import annotations

import logging
import sys
import traceback

from chartrl import allocator
from chartrl.cli import (
    backtest_cmd,
    chart_cmd,
    config_cmd,
    daemon_cmd,
    data_cmd,
    demo_cmd,
    halt_cmd,
    serve_cmd,
    sim_cmd,
    sweep_cmd,
    train_cmd,
)
from chartrl.errors import ChartrlError

# Each module has register(subparsers); add new command modules here.
COMMAND_MODULES = [
    config_cmd,
    data_cmd,
    chart_cmd,
    backtest_cmd,
    daemon_cmd,
    sim_cmd,
    train_cmd,
    sweep_cmd,
    halt_cmd,
    serve_cmd,
    demo_cmd,
]


def main(argv: list[str] | None = None) -> None:
    from chartrl.cli.app import build_parser

    args = build_parser().parse_args(argv)
    allocator.tune()
    try:
        code = args.func(args)
    except ChartrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last resort: one line; the traceback only at debug level
        # Its message can be a whole HTTP body with a signed URL in it: mask, and keep one line.
        from chartrl.logs import _mask_text, one_line_error

        if logging.getLogger().isEnabledFor(logging.DEBUG) or args.log_level == "debug":
            print(_mask_text(traceback.format_exc()), end="", file=sys.stderr)
        print(
            f"error: unexpected {one_line_error(exc, 300)} (rerun with --log-level debug for details)",
            file=sys.stderr,
        )
        sys.exit(1)
    sys.exit(code or 0)
