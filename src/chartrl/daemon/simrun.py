"""Drive the tick on an accelerated clock: the demo's paper daemon and the soak test's children.

APScheduler runs on wall time, so an hour-per-second emulator cannot be scheduled by it; this loop
does what the scheduler does (tick at every candle close + the delay, one tick at a time, a tick
that comes too late is caught up by the ticker's gap check) against any clock. Production runs
``chartrl run`` (service.py); this module only serves the demo and the soak test.

``python -m chartrl.daemon.simrun --config F --speed 3600 --ticks 100 [--live]`` syncs its clock
to the exchange's (the emulator's ``/api/v3/time``) and ticks; SIGTERM finishes the running tick
and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from chartrl.daemon.clock import AcceleratedClock, Clock
from chartrl.daemon.service import start_with_retry
from chartrl.errors import ChartrlError
from chartrl.logs import get_logger
from chartrl.timeframe import timeframe_ms

log = get_logger("chartrl.daemon.simrun")


def drive(
    ticker: Any,
    clock: Clock,
    speed: float,
    ticks: int,
    delay_ms: int,
    stop: threading.Event | None = None,
    on_tick: Callable[[Any], None] | None = None,
    end_ms: int | None = None,
) -> dict[str, int]:
    """Tick at each candle close + ``delay_ms`` of ``clock`` until ``ticks`` ticks ran (or ``end_ms``)."""
    stop = stop or threading.Event()
    step = timeframe_ms(ticker.timeframe)
    counts = {"ticks": 0, "done": 0, "failed": 0, "missed": 0, "skipped": 0, "recovered": 0}
    last_close: int | None = None
    while counts["ticks"] < ticks and not stop.is_set():
        now = clock.now_ms()
        close = now // step * step
        if end_ms is not None and close > end_ms:
            break
        if (last_close is not None and close <= last_close) or now < close + delay_ms:
            due = (
                close + step if last_close is not None and close <= last_close else close
            ) + delay_ms
            stop.wait(min(max((due - now) / 1000.0 / speed, 0.001), 1.0))
            continue
        last_close = close
        counts["ticks"] += 1
        try:
            result = ticker.tick()
        except ChartrlError as exc:
            counts["failed"] += 1
            log.warning("tick_failed", error=str(exc), kind=type(exc).__name__)
            continue
        counts[result.status] = counts.get(result.status, 0) + 1
        if on_tick is not None:
            on_tick(result)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m chartrl.daemon.simrun", description=__doc__.splitlines()[0]
    )
    p.add_argument("--config", required=True, help="TOML config (exchange.api_url = the emulator)")
    p.add_argument(
        "--speed",
        type=float,
        required=True,
        help="the emulator clock's speed (multiple of wall time)",
    )
    p.add_argument("--ticks", type=int, default=1_000_000, help="stop after this many ticks")
    p.add_argument("--live", action="store_true", help="live account (the emulator's balances)")
    p.add_argument("--log-file", help="JSON log lines go here (default: stdout)")
    args = p.parse_args(argv)

    from chartrl.config import load_settings
    from chartrl.daemon.tick import Ticker
    from chartrl.logs import configure_logging
    from chartrl.market.exchange import make_exchange

    settings = load_settings(args.config)
    stream = open(args.log_file, "a", buffering=1) if args.log_file else None  # noqa: SIM115 - lives with the process
    configure_logging(settings.log.level, "json", stream=stream)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    exchange = make_exchange(settings.exchange)
    t0 = time.monotonic()
    start = int(exchange.fetch_time())
    # Half the request's round trip has passed on the exchange clock since it answered.
    clock = AcceleratedClock(start + int((time.monotonic() - t0) * 500 * args.speed), args.speed)
    try:
        ticker = start_with_retry(
            lambda: Ticker(settings, clock=clock, exchange=exchange, live=args.live), stop
        )
    except ChartrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if ticker is None:
        return 0
    log.info("simrun_started", speed=args.speed, ticks=args.ticks, mode=settings.trading.mode)
    counts = drive(
        ticker, clock, args.speed, args.ticks, int(settings.daemon.tick_delay_seconds * 1000), stop
    )
    ticker.close()
    log.info("simrun_stopped", **counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
