"""Full backtest of the cnnrnn policy over the shared BTC history vs the seed-style loop.

The batched runner renders and encodes every chart in chunks, then steps only the recurrent head
with the account's position. The reference, measured in the same run on a slice and extrapolated
to the whole history, is the seed-style loop: per candle, render one chart and run one full
forward pass (CNN + head). The policy is untrained (timing does not depend on the weights).
Target: the whole shared history in under 60 s on this CPU.

    .venv/bin/python benchmarks/backtest.py [--slice 300] [--csv PATH]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from chartrl.account.fills import MarketRules
from chartrl.backtest.runner import run_backtest
from chartrl.chart.spec import ChartSpec
from chartrl.chart.tensor_render import TensorRenderer
from chartrl.market.importer import import_csv
from chartrl.market.store import CandleStore
from chartrl.strategies.registry import build_policy

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "Binance_BTCUSDT_1h.csv"
TARGET_SECONDS = 60.0


def seed_style_loop(policy, candles, spec, ends: np.ndarray) -> float:
    """Seconds for one chart render + one full forward per step over ``ends`` (no batching)."""
    renderer = TensorRenderer(candles, spec)
    hidden = policy.initial_hidden(1)
    pos = torch.zeros(1, 2)
    t = time.perf_counter()
    with torch.inference_mode():
        for end in ends:
            q, hidden = policy(renderer.render([int(end)]), pos, hidden)
            int(q.argmax(-1))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=Path(os.environ.get("CHARTRL_BENCH_CSV", SHARED)))
    ap.add_argument("--slice", type=int, default=300, help="steps of the seed-style loop measured")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both loops (the runner's CPU default is 1)",
    )
    args = ap.parse_args()
    if not args.csv.is_file():
        sys.exit(f"error: {args.csv} is absent (see ../shared/data/README.md)")
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory() as tmp:
        store = CandleStore(tmp)
        import_csv(args.csv, store, "binance", "BTC/USDT", "1h")
        candles = store.load("binance", "BTC/USDT", "1h")
    spec = ChartSpec()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    policy = build_policy("cnnrnn", spec).eval()
    print(
        f"candles {len(candles):,}, chart {spec.channels}x{spec.height}x{spec.width} window {spec.window}, "
        f"torch threads {args.threads}, cuda {torch.cuda.is_available()}"
    )

    t = time.perf_counter()
    result = run_backtest(
        policy, candles, spec, MarketRules(), progress=sys.stderr.isatty(), threads=args.threads
    )
    full = time.perf_counter() - t
    steps = len(result.actions)
    print(
        f"batched backtest: {full:.1f} s for {steps:,} decisions ({full / steps * 1e3:.2f} ms/decision)"
    )

    first = int(candles["timestamp"].searchsorted(result.start))
    ends = np.arange(first, first + min(args.slice, steps))
    loop = seed_style_loop(policy, candles, spec, ends)
    per_step = loop / len(ends)
    estimate = per_step * steps
    print(
        f"seed-style loop: {loop:.2f} s for {len(ends)} steps ({per_step * 1e3:.2f} ms/step) "
        f"-> {estimate:.0f} s extrapolated to {steps:,} steps"
    )
    speedup = estimate / full
    print(
        f"speedup {speedup:.1f}x; target whole history < {TARGET_SECONDS:.0f} s: {'met' if full < TARGET_SECONDS else 'NOT met'}"
    )
    print(
        f"RESULT threads={args.threads} backtest_seconds={full:.1f} decisions={steps} ms_per_decision={full / steps * 1e3:.3f} "
        f"seed_loop_seconds_est={estimate:.0f} speedup={speedup:.1f} target_met={int(full < TARGET_SECONDS)} "
        f"equity_finite={int(math.isfinite(result.equity[-1]))}"
    )


if __name__ == "__main__":
    main()
