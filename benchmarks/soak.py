"""Soak: thousands of live ticks against the loopback exchange with faults and periodic SIGKILLs.

    .venv/bin/python benchmarks/soak.py [--ticks 2000] [--speed 7200] [--fault-rate 0.05]

The daemon's tick runs in forked children (``chartrl.daemon.simrun``) on an accelerated clock; the
first 60 % of the candles are traded under random SIGKILLs (every 4-12 s), the rest uninterrupted
(its RSS is sampled). Checks: no crash but the kills, every candle decided or logged as missed,
no duplicate order, ledger == emulator (orders, trades, balances), RSS flat. Figures: ticks per
wall second, tick latency p50/p99 against the emulator's own klines round trip (measured here).
Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def reference_ms(n: int = 50) -> float:
    """Median round trip of one klines request to a fresh emulator (the network floor of a tick)."""
    from chartrl.config.settings import ExchangeSettings
    from chartrl.market.exchange import make_exchange
    from chartrl.testing.exchange_sim import ExchangeSim
    from chartrl.testing.synthetic import synthetic_candles

    with ExchangeSim(synthetic_candles(600, seed=1)) as sim:
        ex = make_exchange(ExchangeSettings(api_url=sim.url))
        ex.load_markets()
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            ex.fetch_ohlcv("BTC/USDT", "1h", limit=2)
            out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ticks", type=int, default=2000)
    p.add_argument(
        "--speed",
        type=float,
        default=7200.0,
        help="emulator clock speed (7200: two candles a second)",
    )
    p.add_argument("--fault-rate", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workdir", type=Path, help="keep the run here (default: a temporary dir, removed)"
    )
    args = p.parse_args()

    from chartrl.daemon.soak import run_soak
    from chartrl.logs import configure_logging

    configure_logging("error", "console", stream=sys.stderr)
    ref = reference_ms()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="chartrl-soak-"))
    last = [0.0]

    def progress(frac: float) -> None:
        if frac - last[0] >= 0.1:
            last[0] = frac
            print(f"  {min(frac, 1.0):4.0%} of the candles", flush=True)

    t0 = time.monotonic()
    r = run_soak(
        work,
        ticks=args.ticks,
        speed=args.speed,
        kill_every=(4.0, 12.0),
        fault_rate=args.fault_rate,
        seed=args.seed,
        progress=progress,
    )
    wall = time.monotonic() - t0
    lat = np.array(r.tick_ms) if r.tick_ms else np.array([np.nan])
    p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    print(
        f"candles {r.candles}, decided {r.decisions}, logged missed {r.missed}, tick events {r.ticks}"
    )
    print(
        f"kills {r.kills}, restarts {r.restarts}, faults injected {r.faults}, orders {r.orders}, fills {r.fills}"
    )
    print(f"wall {wall:.0f} s, {r.decisions / wall:.2f} decisions per wall second")
    print(
        f"tick latency p50 {p50:.1f} ms ({p50 / ref:.1f}x the klines round trip of {ref:.1f} ms), p99 {p99:.1f} ms"
    )
    print(
        f"RSS of the uninterrupted child: {r.rss_start_mb:.0f} MB -> {r.rss_end_mb:.0f} MB ({r.rss_growth_mb:+.1f} MB)"
    )
    for problem in r.problems:
        print(f"PROBLEM: {problem}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"RESULT ok={'yes' if r.ok else 'no'} candles={r.candles} decided={r.decisions} missed={r.missed} kills={r.kills} "
        f"faults={r.faults} orders={r.orders} problems={len(r.problems)} tick_p50_ms={p50:.1f} "
        f"tick_p99_ms={p99:.1f} ref_klines_ms={ref:.2f} p50_ratio={p50 / ref:.1f} rss_growth_mb={r.rss_growth_mb:.1f}"
    )
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
