"""Cost of the skill test (chartrl.backtest.skill) against the backtest it is part of.

Measured in the same run: a full backtest of an untrained cnnrnn over the shared BTC history
(33k hourly candles; synthetic candles of the same length when it is absent), then the skill test
of that result (1,000 random placements of its round trips), of the ``random`` baseline's backtest
on the same candles (a policy that trades, about every 20 candles), and the skill test's worst
case: a round trip on every pair of candles (about 16k). Each skill timing is the best of
``--repeats``. Target: the skill test adds under a second to the backtest (``target_under_1s_met``
for the model and the random baseline; ``worst_under_1s`` for the worst case).

    .venv/bin/python benchmarks/skill.py [--csv PATH] [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "Binance_BTCUSDT_1h.csv"
TARGET_SECONDS = 1.0


def best_of(repeats: int, fn) -> tuple[float, dict]:
    best, out = float("inf"), {}
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=Path(os.environ.get("CHARTRL_BENCH_CSV", SHARED)))
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the backtest")
    ap.add_argument("--repeats", type=int, default=5, help="skill timings: best of this many")
    args = ap.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train import load_candles

    from chartrl.account.fills import MarketRules
    from chartrl.backtest.runner import run_backtest
    from chartrl.backtest.skill import SIMS, result_skill, skill_test
    from chartrl.chart.spec import ChartSpec
    from chartrl.strategies.registry import build_policy
    from chartrl.strategies.rules import RandomStrategy

    candles, source = load_candles(args.csv)
    spec, rules = ChartSpec(), MarketRules()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    policy = build_policy("cnnrnn", spec).eval()
    t = time.perf_counter()
    result = run_backtest(policy, candles, spec, rules, progress=False, threads=args.threads)
    backtest_s = time.perf_counter() - t
    n = len(result.actions)
    print(f"data: {source}, {len(candles)} candles; backtest of {n} decisions: {backtest_s:.1f} s")

    skill_s, model = best_of(args.repeats, lambda: result_skill(result))
    trips = len(result.fills) // 2
    print(
        f"skill test of the backtest ({trips} round trips, {SIMS} placements): {skill_s * 1e3:.1f} ms"
        f" (p = {model['skill_p_value']:.3f}, percentile {model['skill_percentile']:.1f})"
    )

    # A policy that trades: the `random` baseline's backtest on the same candles (rules are fast).
    rand = run_backtest(RandomStrategy(seed=0), candles, spec, rules, progress=False)
    rand_s, rand_m = best_of(args.repeats, lambda: result_skill(rand))
    rand_trips = len(rand.fills) // 2
    print(
        f"skill test of the random baseline ({rand_trips} round trips): {rand_s * 1e3:.1f} ms "
        f"(p = {rand_m['skill_p_value']:.3f})"
    )

    # Worst case, the densest the fill model allows: buy fills at 2k+1, sell at 2k+2.
    opens = result.candles["open"].to_numpy(np.float64)
    k = np.arange(0, n - 1, 2)
    blocks = np.stack([k + 1, k + 2], axis=1)
    last = float(result.candles["close"].iloc[-1])
    worst_s, _ = best_of(
        args.repeats,
        lambda: skill_test(opens, last, blocks, rules.fee, rules.slippage_bps),
    )
    print(f"skill test, worst case of {len(blocks)} round trips: {worst_s * 1e3:.1f} ms")
    met = max(skill_s, rand_s) < TARGET_SECONDS
    print(
        f"RESULT data={source} candles={len(candles)} backtest_s={backtest_s:.2f} "
        f"skill_s={skill_s:.4f} skill_trips={trips} random_skill_s={rand_s:.4f} "
        f"random_trips={rand_trips} skill_worst_s={worst_s:.4f} "
        f"skill_worst_trips={len(blocks)} skill_share_of_backtest={skill_s / backtest_s:.4f} "
        f"worst_share_of_backtest={worst_s / backtest_s:.4f} target_under_1s_met={int(met)} "
        f"worst_under_1s={int(worst_s < TARGET_SECONDS)}"
    )


if __name__ == "__main__":
    main()
