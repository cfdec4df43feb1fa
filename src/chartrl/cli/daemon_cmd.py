"""chartrl run | retrain | status: the trading daemon, one retrain cycle, and what the daemon is doing."""

from __future__ import annotations

import argparse
import json
from typing import Any

from chartrl.cli.app import add_series_options, series_flags, series_overrides, settings
from chartrl.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run", help="run the trading daemon (paper by default; --live for real orders)"
    )
    run.add_argument(
        "--live", action="store_true", help="send real orders (trading.mode must be 'live' too)"
    )
    add_series_options(run, date_range=False)
    run.set_defaults(func=_run)

    retrain = sub.add_parser(
        "retrain", help="run one retrain cycle now: fine-tune, compare, promote if better"
    )
    retrain.add_argument("--no-fetch", action="store_true", help="do not fetch new candles first")
    retrain.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="fine-tuning DQN epochs (default: daemon.retrain_epochs)",
    )
    retrain.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="cap environment steps per epoch (quick runs, demo)",
    )
    retrain.add_argument("--progress", action="store_true", help="show training progress bars")
    retrain.add_argument(
        "--nice",
        type=int,
        default=0,
        metavar="N",
        help="lower the CPU priority by N first (the daemon passes 10)",
    )
    add_series_options(retrain, date_range=False)
    retrain.set_defaults(func=_retrain)

    status = sub.add_parser(
        "status", help="what the daemon is doing (reads the ledger, never writes)"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    add_series_options(status, date_range=False)
    status.set_defaults(func=_status)


def _run(args: argparse.Namespace) -> int:
    from chartrl.config import load_settings
    from chartrl.daemon.service import Daemon
    from chartrl.daemon.symbol_tickers import ticker_factory

    s = settings(args)
    check_live(s, args.live)

    def reload():  # SIGHUP: the same sources, read again; command-line options still win
        fresh = load_settings(args.config, overrides=series_overrides(args))
        check_live(fresh, args.live)
        return fresh

    console = None

    def follow_console(new: Any) -> None:  # SIGHUP: [console] follows the reloaded settings
        nonlocal console
        from chartrl.console.server import follow

        console = follow(console, new)

    # The nightly retrain child must work on the same series and data dir (ledger) as the daemon.
    daemon = Daemon(
        s,
        ticker_factory(args.live),
        config_path=args.config,
        reload_settings=reload,
        cli_overrides=series_flags(args),
        on_reload=follow_console,
    )
    # SIGHUP/SIGTERM handled from here on: a reload asked while the console and the ticker start
    # waits for the first heartbeat instead of killing the process (SIGHUP's default action).
    daemon.install_signals()
    if s.console.enabled:  # bound before the first tick: a port in use fails the start, clearly
        from chartrl.console.server import Console

        console = Console(s)
        console.start_in_thread()
        console.announce()
    try:
        return daemon.run()
    finally:
        if console is not None:
            console.stop()


def check_live(settings: Any, live_flag: bool) -> None:
    """Real orders need the config (trading.mode = 'live'), the command line (--live) and keys."""
    if settings.trading.mode == "live" or live_flag:
        from chartrl.account.live import require_live

        require_live(settings, live_flag)


def _retrain(args: argparse.Namespace) -> int:
    from chartrl.daemon.retrain import run_retrains

    s = settings(args)
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.nice:
        import os

        os.nice(args.nice)
    results = run_retrains(
        s,
        fetch=not args.no_fetch,
        epochs=args.epochs,
        max_steps=args.max_steps,
        progress=args.progress,
    )
    for result in results:
        print(result.summary())
    return 1 if any(r.status == "failed" for r in results) else 0


def _status(args: argparse.Namespace) -> None:
    from chartrl.daemon.status import format_status, read_status

    s = settings(args)
    explicit = getattr(args, "symbol", None)
    st = read_status(
        s.data_dir,
        symbol=explicit,
        mode=None,
        reporting=s.market.reporting,
        exchange=s.exchange.id,
        timeframe=s.market.timeframe,
    )
    if args.json:
        print(json.dumps(st.to_dict(), indent=1, default=str))
    else:
        print(format_status(st, halt_file=s.halt_file))
