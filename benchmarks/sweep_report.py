"""Time ``write_report`` on a synthetic sweep directory the size of a real sweep.

The directory comes from chartrl.testing.sweepdir: ``--strategies`` strategies x ``--configs``
configurations x ``--seeds`` seeds x ``--folds`` folds of ``--candles`` hourly test candles each,
a few runs failed. No training: the report's own cost (reading the files, bootstrap intervals,
DSR, CSCV PBO over up to 12,870 splits, the PNGs). Prints the per-candle PBO line and
``RESULT report_seconds=<s> runs=<n> pbo_combinations=<c>``. The strategies' drifts differ
(0, 0.0002, 0.0004, ... a candle), so a working PBO should come out near 0 here.

    .venv/bin/python benchmarks/sweep_report.py [--strategies 4 --configs 5 --seeds 3 --folds 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from chartrl.experiments import pbo, stats
from chartrl.experiments.report import write_report
from chartrl.testing.sweepdir import make_sweep_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", type=int, default=4)
    ap.add_argument("--configs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--candles", type=int, default=720)
    args = ap.parse_args()
    names = ["cnn", "cnnrnn", "gru", "resnet", "cnn-stack", "sma"][: args.strategies]
    with tempfile.TemporaryDirectory() as tmp:
        root = make_sweep_dir(
            Path(tmp),
            strategies=[(n, 0.0002 * i) for i, n in enumerate(names)],
            configs=args.configs,
            seeds=range(1, args.seeds + 1),
            folds=args.folds,
            candles=args.candles,
            fail=[(names[-1], 1, 0)],
        )
        t = time.perf_counter()
        write_report(root)
        seconds = time.perf_counter() - t
        s = stats.sweep_stats(root)
        res = s["pbo_returns"]["result"]
        if res is not None:
            slope = res.degradation[0] if res.degradation else float("nan")
            print(
                f"{pbo.describe(res)}; degradation slope {slope:.2f}, "
                f"OOS Sharpe negative in {res.prob_oos_loss:.0%} of the splits"
            )
        print(
            f"RESULT report_seconds={seconds:.2f} runs={s['counts']['runs']} "
            f"pbo_combinations={res.combinations if res else 0}"
        )


if __name__ == "__main__":
    main()
