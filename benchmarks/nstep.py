"""n-step returns against validation: which ``--n-step`` default the measurement supports.

For each n (``--n 1,3,5``) and seed (1..``--seeds``) this trains ``chartrl train --n-step n`` (a
subprocess each, ``--jobs`` at a time, ``--threads`` torch threads each) on the same stored
candles, the same split and the same budget, then compares the runs' last validation as
``chartrl compare`` compares strategies (train/compare.py): mean ± sample std [bootstrap 95 %
interval of the mean over seeds] of return, Sharpe, round trips, exposure and skill p-value, and
the per-seed paired differences against n = 1 (seed k of every n starts from the same weights
and, with imitation, the same imitation run, so pairing removes what they share).

The split is a date: training candles end before ``--split``, validation decisions start one
chart window after it (the purge) and run to ``--until``; nothing after ``--until`` is loaded.
A run already complete in ``--out`` (its history has the last DQN epoch) is reused, so an
interrupted measurement continues where it stopped.

    .venv/bin/python benchmarks/nstep.py [--csv PATH --symbol S] [--from D --split D --until D]
        [--strategy cnnrnn] [--seeds 3] [--n 1,3,5] [--imitation-epochs 0] [--epochs 2]
        [--jobs 3 --threads 1] [--out DIR] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "Binance_BTCUSDT_1h.csv"
REFERENCE = "n=1"


def import_store(csv: Path, symbol: str, data_dir: Path) -> None:
    """The CSV into a data dir of its own (the shared data is never copied into the repo)."""
    subprocess.run(
        [sys.executable, "-m", "chartrl", "import", str(csv), "--symbol", symbol]
        + ["--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
    )


def split_fraction(data_dir: Path, symbol: str, start: str, split: str, until: str) -> float:
    """The ``--validation-fraction`` whose split falls on the first candle at or after ``split``
    (prepare_data splits at round(n * (1 - f)))."""
    from chartrl.cli.app import parse_date
    from chartrl.market.store import CandleStore

    dates = [parse_date(d, o) for d, o in ((start, "--from"), (until, "--until"))]
    c = CandleStore(data_dir).load("binance", symbol, "1h", *dates)
    k = int((c["timestamp"] < pd.Timestamp(parse_date(split, "--split"))).sum())
    return (len(c) - k) / len(c)


def complete(run_dir: Path, epochs: int) -> bool:
    from chartrl.train.dqn import read_history

    if not (run_dir / "history.csv").is_file():
        return False
    rows = read_history(run_dir)
    return any(
        r["stage"] == "dqn" and r["kind"] == "epoch" and int(r["epoch"]) == epochs for r in rows
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=SHARED)
    ap.add_argument("--symbol", default="BTC/USDT")
    ap.add_argument("--from", dest="start", default="2019-07-01")
    ap.add_argument("--split", default="2020-07-01")
    ap.add_argument("--until", default="2020-08-31T23:00")
    ap.add_argument("--strategy", default="cnnrnn")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", default="1,3,5", help="n-step values; the first is the reference")
    ap.add_argument("--imitation-epochs", type=int, default=0, help="0: the DQN stage alone")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-steps-per-epoch", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("reports/nstep"))
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: summarise the seeds complete for every n in --out",
    )
    args = ap.parse_args()
    if not args.csv.is_file():
        print(f"error: {args.csv} not found; give --csv (the shared data is ../shared/data)")
        return 2
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    from chartrl.train import compare
    from chartrl.train.dqn import read_history

    ns = [int(x) for x in args.n.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix="nstep-data-")
    data_dir = Path(tmp.name)
    import_store(args.csv, args.symbol, data_dir)
    fraction = split_fraction(data_dir, args.symbol, args.start, args.split, args.until)
    base = [sys.executable, "-m", "chartrl", "train", "--strategy", args.strategy]
    base += ["--exchange", "binance", "--symbol", args.symbol, "--timeframe", "1h"]
    base += ["--data-dir", str(data_dir), "--from", args.start, "--until", args.until]
    base += ["--validation-fraction", f"{fraction:.10f}", "--threads", str(args.threads)]
    base += ["--imitation-epochs", str(args.imitation_epochs), "--epochs", str(args.epochs)]
    base += ["--no-progress", "--log-level", "warning"]
    if args.imitation_epochs == 0:
        base += ["--stages", "dqn"]
    if args.max_steps_per_epoch:
        base += ["--max-steps-per-epoch", str(args.max_steps_per_epoch)]
    # Seed-major order: a measurement cut short still holds complete pairs.
    jobs = [(seed, n) for seed in range(1, args.seeds + 1) for n in ns]

    def run(job: tuple[int, int]) -> float:
        seed, n = job
        run_dir = args.out / "runs" / f"n{n}-seed{seed}"
        if complete(run_dir, args.epochs):
            return 0.0
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)  # an unfinished run starts again
        t = time.perf_counter()
        cmd = base + ["--n-step", str(n), "--seed", str(seed), "--out", str(run_dir)]
        log = args.out / f"n{n}-seed{seed}.log"
        with log.open("w") as fh:
            subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT)
        took = time.perf_counter() - t
        print(f"n={n} seed={seed}: {took:.0f} s", flush=True)
        return took

    seconds = []
    if not args.report_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            seconds = list(pool.map(run, jobs))
    # Only seeds complete for every n: the comparison is paired by seed.
    seeds = [
        s
        for s in range(1, args.seeds + 1)
        if all(complete(args.out / "runs" / f"n{n}-seed{s}", args.epochs) for n in ns)
    ]
    if not seeds:
        print(f"error: no seed complete for every n in {args.out}")
        return 2
    histories = {
        f"n={n}": [read_history(args.out / "runs" / f"n{n}-seed{s}") for s in seeds] for n in ns
    }
    summary = compare.summarize(histories)
    paired = compare.paired_differences(histories, reference=f"n={ns[0]}")
    table = compare.markdown_table(summary, None, paired, reference_name=f"n={ns[0]}")
    compare.plot_curves(histories, args.out / "curves.png")
    first = histories[f"n={ns[0]}"][0]
    print(
        f"data: {args.csv.name} {args.start} .. {args.until}, split {args.split} "
        f"(validation fraction {fraction:.4f}); {args.strategy}, {args.imitation_epochs} imitation "
        f"+ {args.epochs} DQN epochs, {int(first[-1]['updates'])} DQN updates per run; "
        f"seeds {seeds}; {sum(seconds):.0f} s of runs"
    )
    print(table)
    (args.out / "nstep.json").write_text(
        json.dumps(
            {"summary": summary, "paired": paired, "args": vars(args)}, default=str, indent=2
        )
    )

    def mean(n: int, key: str) -> str:
        d = paired.get(f"n={n}", {}).get(key) or {}
        ci = d.get("ci95")
        return "na" if not ci else f"[{ci[0]:.4f},{ci[1]:.4f}]"

    parts = [
        f"d_sharpe_n{n}_ci={mean(n, 'sharpe')} d_return_n{n}_ci={mean(n, 'total_return')}"
        for n in ns[1:]
    ]
    distinct = [
        n
        for n in ns[1:]
        if (ci := (paired.get(f"n={n}", {}).get("sharpe") or {}).get("ci95"))
        and (ci[0] > 0 or ci[1] < 0)
    ]
    print(
        f"RESULT strategy={args.strategy} seeds={len(seeds)} "
        + " ".join(parts)
        + f" sharpe_distinguishable_from_n{ns[0]}={','.join(map(str, distinct)) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
