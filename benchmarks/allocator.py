"""What chartrl.allocator's malloc settings buy a training epoch, against glibc's defaults.

benchmarks/epoch_worker.py runs as a subprocess, alternately with the settings the CLI makes
(``tuned``) and with ``CHARTRL_MALLOC=system`` (glibc's defaults: the reference): the same fixed
work each time (the history loaded and every chart rendered, then per policy DQN runs of S and
2S steps and a validation). Compared is that whole work's time, by the wall clock and in CPU
seconds, not the worker's projected epoch: a projection is the difference of two short runs,
which a loaded machine made swing by 2x from one repeat to the next. Order alternates per
repeat, so a drift of the machine's load falls on both; per repeat the ratio reference / tuned,
and their median. Also the worker's kernel CPU seconds (page faults mostly) and peak RSS.

    .venv/bin/python benchmarks/allocator.py [--policies cnn,cnnrnn] [--steps 128] [--repeats 2]

``RESULT malloc_speedup=<x> cpu_speedup=<y> sys_s_ratio=<z> rss_ratio=<w>``: the median
wall-clock and CPU-time speedups (reference over tuned: above 1 is faster), the tuned kernel
seconds over the reference's, and the tuned peak RSS over the reference's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from epoch_worker import run_epoch_worker

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "Binance_BTCUSDT_1h.csv"
VARIANTS = {"reference": {"CHARTRL_MALLOC": "system"}, "tuned": {}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=Path(os.environ.get("CHARTRL_BENCH_CSV", SHARED)))
    ap.add_argument("--policies", default="cnn,cnnrnn")
    ap.add_argument("--steps", type=int, default=128, help="steady-state steps timed (x16)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if not args.csv.is_file():
        print(
            f"error: {args.csv} not found; give --csv (a Binance-style hourly CSV)", file=sys.stderr
        )
        return 2
    totals: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        for v in list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]:
            run = (ROOT / "src", args.csv, args.policies, args.steps, args.threads)
            rows = run_epoch_worker(*run, env=VARIANTS[v])
            if rows[-1]["malloc"] != (v == "tuned"):
                print(
                    f"error: malloc {'not ' * (v == 'tuned')}tuned in the {v} run: unset "
                    "MALLOC_*_ and GLIBC_TUNABLES first (chartrl.allocator)",
                    file=sys.stderr,
                )
                return 2
            totals[v].append(rows[-1])  # the worker's totals after its last policy
            for row in rows:
                print(
                    f"  repeat {r + 1} {v:9s} {row['policy']:7s} validation {row['val_s']:.1f} s,"
                    f" step {row['step_s'] * 1000:.0f} ms",
                    flush=True,
                )
            t = rows[-1]
            print(
                f"  repeat {r + 1} {v:9s} whole worker {t['wall_total_s']:.1f} wall s,"
                f" {t['cpu_total_s']:.1f} CPU s of which kernel {t['sys_s']:.1f} s,"
                f" peak RSS {t['maxrss_mb']:.0f} MB",
                flush=True,
            )

    def ratio(key: str) -> float:
        pairs = zip(totals["reference"], totals["tuned"], strict=True)
        return float(np.median([a[key] / b[key] for a, b in pairs]))

    figures = {
        "malloc_speedup": ratio("wall_total_s"),
        "cpu_speedup": ratio("cpu_total_s"),
        "sys_s_ratio": 1 / ratio("sys_s"),
        "rss_ratio": 1 / ratio("maxrss_mb"),
    }
    print("RESULT " + " ".join(f"{k}={x:.3f}" for k, x in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
