"""Tick latency against the loopback exchange: candle close (the tick firing) to the order being sent.

    .venv/bin/python benchmarks/tick.py [--ticks 60] [--window 250]

Live mode against the emulator (manual clock, one candle per tick), the default chart (250 candles,
100x140) and a default-size cnnrnn whose output layer is set to buy when flat and sell when long,
so every tick sends a market order. Measured per tick: from the tick's start to the moment the
order is handed to ccxt (``order_recorded``: stored in the ledger, about to go out), and the whole
tick; with the fetch/render/policy/order parts. Reference: the median round trip of one klines
request to the same emulator, measured in this run. Target: p50 < 150 ms. Last line ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ticks", type=int, default=60)
    p.add_argument(
        "--window", type=int, default=250, help="chart window (default: the default ChartSpec's)"
    )
    args = p.parse_args()

    import torch

    from chartrl.chart.spec import ChartSpec
    from chartrl.config.settings import Settings
    from chartrl.daemon.tick import Ticker
    from chartrl.logs import configure_logging
    from chartrl.market.candles import to_ms
    from chartrl.strategies.registry import build_policy
    from chartrl.testing.exchange_sim import (
        DEFAULT_API_KEY,
        DEFAULT_API_SECRET,
        ExchangeSim,
        SimClock,
    )
    from chartrl.testing.synthetic import synthetic_candles
    from chartrl.train.checkpoint import save_model

    torch.set_num_threads(2)
    configure_logging("warning", "json", stream=io.StringIO())
    hour = 3_600_000
    candles = synthetic_candles(args.window + 400 + args.ticks + 5, seed=4)
    first = args.window + 400
    clock = SimClock(int(to_ms(candles["timestamp"].iloc[first])) + 5000)
    work = Path(tempfile.mkdtemp(prefix="chartrl-tickbench-"))
    spec = ChartSpec(window=args.window)
    with ExchangeSim(candles, clock=clock, balances={"USDT": 10_000.0}, commission="quote") as sim:
        s = Settings.model_validate(
            {
                "exchange": {
                    "api_url": sim.url,
                    "api_key": DEFAULT_API_KEY,
                    "api_secret": DEFAULT_API_SECRET,
                },
                "market": {"since": "2020-01-01"},
                "data": {"dir": str(work)},
                "chart": spec.model_dump(),
                "trading": {"mode": "live"},
                "model": {"strategy": "cnnrnn", "device": "auto"},
                "risk": {"max_orders_per_day": 100_000, "max_daily_loss": 1.0},
            }
        )
        torch.manual_seed(0)
        policy = build_policy("cnnrnn", spec)
        with torch.no_grad():  # buy when flat, sell when long: an order every tick
            policy.out.weight[:, -2] = torch.tensor([0.0, -10.0, 10.0])
            policy.out.bias[:] = torch.tensor([0.0, 5.0, 0.0])
        series = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}
        save_model(s.model_dir, policy, {"chart_spec": spec, "series": series})

        ex = Ticker(s, clock=clock, live=True).exchange  # warm: markets, first fetch of the history
        ref = []
        for _ in range(30):
            t0 = time.perf_counter()
            ex.fetch_ohlcv("BTC/USDT", "1h", limit=2)
            ref.append((time.perf_counter() - t0) * 1000)
        ref_ms = statistics.median(ref)

        ticker = Ticker(s, clock=clock, live=True)
        sent: list[float] = []
        ticker.account.on_point = lambda name: (
            sent.append(time.perf_counter()) if name == "order_recorded" else None
        )
        ticker.tick()  # first tick re-warms the recurrent state: not a steady-state tick
        clock.advance(hour)
        to_order, totals, parts = (
            [],
            [],
            {k: [] for k in ("fetch_ms", "render_ms", "policy_ms", "order_ms")},
        )
        for _ in range(args.ticks):
            sent.clear()
            t0 = time.perf_counter()
            r = ticker.tick()
            if sent:
                to_order.append((sent[0] - t0) * 1000)
            totals.append(r.timings["total_ms"])
            for k in parts:
                parts[k].append(r.timings.get(k, float("nan")))
            clock.advance(hour)
        ticker.close()
    p50, p99 = np.percentile(to_order, 50), np.percentile(to_order, 99)
    t50, t99 = np.percentile(totals, 50), np.percentile(totals, 99)
    print(
        f"{args.ticks} ticks, {len(to_order)} orders sent; chart {spec.window} candles {spec.height}x{spec.width}, device {ticker.runner.device}"
    )
    print(
        f"candle close -> order sent: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({p50 / ref_ms:.1f}x the klines round trip of {ref_ms:.2f} ms)"
    )
    print(f"whole tick:                 p50 {t50:.1f} ms, p99 {t99:.1f} ms")
    print(
        "parts (p50): " + ", ".join(f"{k[:-3]} {np.nanmedian(v):.1f} ms" for k, v in parts.items())
    )
    print(
        f"RESULT tick_to_order_p50_ms={p50:.1f} tick_to_order_p99_ms={p99:.1f} tick_total_p50_ms={t50:.1f} "
        f"tick_total_p99_ms={t99:.1f} ref_klines_ms={ref_ms:.2f} p50_ratio={p50 / ref_ms:.1f} orders={len(to_order)} "
        f"target_p50_ms=150 met={'yes' if p50 < 150 else 'no'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
