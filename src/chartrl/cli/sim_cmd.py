"""chartrl exchange-sim: run the loopback Binance emulator in the foreground."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path
from typing import Any

from chartrl.cli.app import parse_date, settings
from chartrl.errors import DataError, UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "exchange-sim",
        help="serve a Binance-compatible REST emulator on 127.0.0.1 (tests, demos, soak runs)",
        description="Serve candles (a CSV/Parquet file or synthetic ones) through a subset of the Binance spot "
        "REST API, with a paper account and injectable faults. Point exchange.api_url at the URL it logs.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="candles: a CryptoDataDownload-style or canonical CSV, or a store .parquet file",
    )
    src.add_argument(
        "--synthetic",
        action="store_true",
        help="serve synthetic BTC-like candles (not real prices)",
    )
    p.add_argument(
        "--candles", type=int, default=5000, help="number of synthetic candles (default 5000)"
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic candles (default 7)")
    p.add_argument(
        "--future",
        type=int,
        default=1000,
        help="--synthetic on the wall clock: candles made after now, served as their time comes "
        "(default 1000)",
    )
    p.add_argument("--symbol", help="symbol such as BTC/USDT (default: config market.symbol)")
    p.add_argument(
        "--timeframe", help="timeframe (default: inferred from --csv, else config market.timeframe)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)"
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not loopback (the emulator is a test fake with a well-known key: other machines could trade on it)",
    )
    p.add_argument(
        "--port", type=int, default=8765, help="TCP port (default 8765; 0 picks a free one)"
    )
    p.add_argument(
        "--speed",
        type=float,
        help="run the clock at this multiple of wall time (3600: an hour per second); default: a still clock",
    )
    p.add_argument(
        "--start",
        metavar="DATE",
        help="clock start, UTC (default: just after the last candle opened; with --speed, the middle of the data)",
    )
    p.add_argument(
        "--faults",
        type=Path,
        metavar="FILE",
        help="TOML file of [[fault]] rules (see docs/emulator.md)",
    )
    p.add_argument(
        "--balance",
        action="append",
        default=[],
        metavar="ASSET=AMOUNT",
        help="starting balance, repeatable (default USDT=10000)",
    )
    p.add_argument(
        "--api-key", default=None, help="API key clients must send (default: sim-api-key)"
    )
    p.add_argument(
        "--api-secret", default=None, help="API secret clients sign with (default: sim-api-secret)"
    )
    p.add_argument(
        "--fee", type=float, default=0.001, help="taker and maker fee rate (default 0.001)"
    )
    p.add_argument(
        "--slippage",
        type=float,
        default=0.0,
        help="market orders fill this fraction worse than the candle open (default 0)",
    )
    p.add_argument(
        "--partial-fills",
        type=int,
        default=1,
        metavar="N",
        help="execute every order in N fills, one per request (default 1)",
    )
    p.add_argument(
        "--commission",
        choices=["binance", "quote"],
        default="binance",
        help="fee asset: binance = the asset received; quote = always the quote",
    )
    p.add_argument(
        "--state-file",
        type=Path,
        help="persist balances, orders and trades to this JSON file (restored on start)",
    )
    p.set_defaults(func=_run)


def _balances(items: list[str]) -> dict[str, float] | None:
    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        asset, sep, amount = item.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not asset.strip() or value < 0:
            raise UsageError(
                f"--balance {item!r} must be ASSET=AMOUNT with a non-negative amount, e.g. USDT=10000"
            )
        out[asset.strip().upper()] = value
    return out


def _check_options(args: argparse.Namespace) -> None:
    """Refuse a number outside its sensible range, naming the option (before any data is loaded)."""
    checks = (
        ("--candles", args.candles, args.candles >= 1, "at least 1"),
        ("--future", args.future, args.future >= 0, "0 or more"),
        ("--partial-fills", args.partial_fills, args.partial_fills >= 1, "at least 1"),
        ("--speed", args.speed, args.speed is None or args.speed > 0, "above 0"),
        ("--fee", args.fee, 0 <= args.fee < 0.1, "a rate from 0 to below 0.1 (0.001 = 0.1%)"),
        (
            "--slippage",
            args.slippage,
            0 <= args.slippage < 0.1,
            "a fraction from 0 to below 0.1 (0.0005 = 5 bp)",
        ),
        ("--port", args.port, 0 <= args.port <= 65535, "from 0 to 65535 (0 picks a free one)"),
    )
    for option, value, ok, allowed in checks:
        if not ok:
            raise UsageError(f"{option} {value:g} is out of range; use {allowed}")
    if not args.allow_remote and not _is_loopback(args.host):
        raise UsageError(
            f"--host {args.host} is not a loopback address; the emulator has no real authentication, so listen on "
            "127.0.0.1 or ::1, or pass --allow-remote if other machines must reach it"
        )


def _is_loopback(host: str) -> bool:
    """Loopback by address, or the name localhost (no DNS lookup: a name could resolve anywhere)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_candles(path: Path, symbol: str, timeframe: str | None) -> tuple[Any, str]:
    """Canonical candles from a CSV (the importer's parser and validation) or a Parquet file."""
    import pandas as pd

    from chartrl.market.validate import infer_timeframe, validate_candles

    if not path.is_file():
        raise UsageError(
            f"{path} does not exist or is not a file; pass a candle CSV or .parquet file to --csv"
        )
    if path.suffix == ".parquet":
        try:
            from chartrl.market.months import read_parquet_candles

            raw = read_parquet_candles(path)  # a store head: its month files
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise DataError(f"{path} is not a readable Parquet file ({exc})") from None
    else:
        from chartrl.market.importer import read_candle_csv

        raw = read_candle_csv(path, symbol).frame
    seen = infer_timeframe(pd.to_datetime(raw["timestamp"], utc=True))
    if timeframe and seen and seen != timeframe:
        raise UsageError(f"{path} holds {seen} candles, not {timeframe}; pass --timeframe {seen}")
    tf = timeframe or seen
    if tf is None:
        raise UsageError(f"cannot tell the timeframe of {path}; pass --timeframe")
    frame, report = validate_candles(raw, str(path), strict=False, timeframe=tf)
    if frame.empty:
        raise DataError(f"{path} has no usable candles after validation")
    return frame, tf


def _run(args: argparse.Namespace) -> int:
    import pandas as pd

    from chartrl.logs import get_logger, register_secret
    from chartrl.testing.exchange_sim import (
        DEFAULT_API_KEY,
        DEFAULT_API_SECRET,
        ExchangeSim,
        FaultPlan,
        SimClock,
    )
    from chartrl.testing.synthetic import synthetic_candles
    from chartrl.timeframe import timeframe_ms

    s = settings(args)
    log = get_logger("chartrl.exchange_sim")
    symbol = args.symbol or s.market.symbol
    _check_options(args)
    speed = args.speed
    wall = args.synthetic and args.start is None and speed is None
    if args.synthetic:
        timeframe = args.timeframe or s.market.timeframe
        first = None
        if wall:  # history ends now and the clock is the wall clock, as `chartrl run` expects
            step = timeframe_ms(timeframe)
            first = pd.Timestamp(
                (time.time() * 1000 // step - (args.candles - 1)) * step, unit="ms"
            )
            speed = 1.0
        candles = synthetic_candles(
            args.candles + (args.future if wall else 0),
            seed=args.seed,
            timeframe=timeframe,
            **({"start": first} if wall else {}),
        )
        source = f"synthetic (seed {args.seed}, NOT real prices)"
    else:
        candles, timeframe = load_candles(args.csv, symbol, args.timeframe)
        source = str(args.csv)
    faults = FaultPlan.from_file(args.faults) if args.faults else None
    first_ms = int(candles["timestamp"].iloc[0].value // 1_000_000)
    last_ms = int(candles["timestamp"].iloc[-1].value // 1_000_000)
    start = parse_date(args.start, "--start")
    if wall:
        start_ms = int(time.time() * 1000)
    elif start is not None:
        start_ms = int(start.timestamp() * 1000)
    elif args.speed is not None:
        start_ms = int(candles["timestamp"].iloc[len(candles) // 2].value // 1_000_000) + 1000
    else:
        start_ms = last_ms + 1000
    if not first_ms <= start_ms:
        raise UsageError(
            f"--start {args.start} is before the first candle ({candles['timestamp'].iloc[0]:%Y-%m-%d %H:%M}); no price exists yet"
        )
    api_key, api_secret = args.api_key or DEFAULT_API_KEY, args.api_secret or DEFAULT_API_SECRET
    register_secret(api_secret)
    sim = ExchangeSim(
        candles,
        symbol=symbol,
        timeframe=timeframe,
        port=args.port,
        clock=SimClock(start_ms, speed),
        balances=_balances(args.balance),
        api_key=api_key,
        api_secret=api_secret,
        fee=args.fee,
        state_file=args.state_file,
        host=args.host,
        slippage=args.slippage,
        partial_fills=args.partial_fills,
        commission=args.commission,
        faults=faults,
    )
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        try:
            sim.start()
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {args.host}:{args.port} ({exc.strerror}); pick another --port"
            ) from None
        log.info(
            "exchange emulator ready",
            api_url=sim.url,
            symbol=symbol,
            timeframe=timeframe,
            candles=len(candles),
            source=source,
            clock="manual" if speed is None else ("wall" if wall else f"x{speed:g}"),
            clock_start=f"{pd.Timestamp(start_ms, unit='ms', tz='UTC'):%Y-%m-%d %H:%M:%S}",
            faults=len(faults.rules) if faults else 0,
            hint=f'set exchange.api_url = "{sim.url}" (or CHARTRL__EXCHANGE__API_URL={sim.url})',
        )
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
