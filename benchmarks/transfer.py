"""Issue 14's measurement: does a chart model trained on two markets beat one trained on either alone?

Trains ``--strategy`` (cnnrnn) on (a) BTC/USDT alone, (b) ETC/BTC alone, (c) both, with the same
DQN budget (steps x lanes, ``--max-steps``; an imitation epoch is a pass over the training
candles, so (c) gets about twice the imitation updates unless ``--max-steps`` caps them below the
smaller series' ~128 an epoch), ``--seeds``
seeds each, on candles up to ``--train-until``; then replays every model on both series' later
period (``--test-from`` .. ``--test-until``) with the transfer matrix (``chartrl backtest
--series``). Reports per (training set, test series) the mean, sample std (ddof=1) and a bootstrap
95 % interval over seeds of return, Sharpe and the skill p-value, buy-and-hold beside them, and the
per-seed paired difference (c) - (a) on BTC and (c) - (b) on ETC.

Everything runs through the CLI. The candles come from a data dir holding both series (``chartrl
import ../shared/data/Binance_BTCUSDT_1h.csv --symbol BTC/USDT`` and the ETC/BTC file), the chart
from ``--chart`` (a TOML [chart] body; a small one by default so a run fits a shared CPU).

    nice -n 10 .venv/bin/python benchmarks/transfer.py --data-dir /tmp/data --out /tmp/transfer \
        [--seeds 3] [--imitation-epochs 1] [--epochs 1] [--max-steps 150] [--num-envs 4] [--jobs 2]

(``--jobs``: trainings at a time, one thread each; a model already trained is kept, so a rerun
after an interruption continues.)

(validation only at epoch ends: ``--eval-every`` is set past the run's updates.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from chartrl.train.seedstats import bootstrap_ci, sample_std

BTC, ETC = "binance:BTC/USDT:1h", "binance:ETC/BTC:1h"
SETS = {"a_btc": [BTC], "b_etc": [ETC], "c_both": [BTC, ETC]}
TINY_CHART = "window = 64\nheight = 48\nwidth = 64\n"


def chartrl(config: Path, *argv: str) -> None:
    cmd = [sys.executable, "-m", "chartrl", "-c", str(config), "--log-level", "warning", *argv]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"  {time.perf_counter() - t:6.0f} s  chartrl {' '.join(argv)}", flush=True)


def summary(values: list[float]) -> str:
    v = [x for x in values if x == x]
    if not v:
        return "n/a"
    mean, sd, ci = sum(v) / len(v), sample_std(v), bootstrap_ci(v)
    spread = f" ± {sd:.3g}" if sd is not None else ""
    interval = f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""
    return f"{mean:.3g}{spread}{interval} (n={len(v)})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--strategy", default="cnnrnn")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--stages", default="imitation,dqn")
    p.add_argument("--imitation-epochs", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=150)
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--learning-starts", type=int, default=128)
    p.add_argument("--train-until", default="2019-12-31T23:00")
    p.add_argument("--test-from", default="2020-01-01")
    p.add_argument("--test-until", default="2020-12-29")
    p.add_argument("--chart", default=TINY_CHART, help="TOML body of the [chart] section")
    p.add_argument("--jobs", type=int, default=1, help="trainings at a time (one thread each)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / "chartrl.toml"
    config.write_text(f"[chart]\n{args.chart}\n")
    os.environ.setdefault("CHARTRL_DATA_DIR", str(args.data_dir))
    budget = [
        "--stages", args.stages, "--imitation-epochs", str(args.imitation_epochs), "--epochs", str(args.epochs),
        "--max-steps-per-epoch", str(args.max_steps), "--num-envs", str(args.num_envs),
        "--learning-starts", str(args.learning_starts), "--eval-every", "1000000",
        "--threads", "1", "--no-progress",
    ]  # fmt: skip
    seeds = range(1, args.seeds + 1)

    def model_dir(name: str, seed: int) -> Path:
        return args.out / "models" / f"{name}-seed{seed}"

    def fit(name: str, series: list[str], seed: int) -> None:
        model = model_dir(name, seed)
        if not (model / "model.json").exists():
            chartrl(
                config, "train", "--strategy", args.strategy, "--series", ",".join(series),
                "--until", args.train_until, "--seed", str(seed), "--out", str(model), *budget,
            )  # fmt: skip

    runs = [(name, series, seed) for name, series in SETS.items() for seed in seeds]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for done in [pool.submit(fit, *run) for run in runs]:
            done.result()
    rows = []
    for name, _, seed in runs:
        matrix = args.out / "matrix" / f"{name}-seed{seed}"
        if not (matrix / "matrix.csv").exists():
            chartrl(
                config, "backtest", "--model", str(model_dir(name, seed)), "--series", f"{BTC},{ETC}",
                "--from", args.test_from, "--until", args.test_until, "--device", "cpu",
                "--threads", "1", "--no-progress", "--trials", str(len(runs)), "--out", str(matrix),
            )  # fmt: skip
        m = pd.read_csv(matrix / "matrix.csv")
        m.insert(0, "seed", seed)
        m.insert(0, "trained_on", name)
        rows.append(m)
    table = pd.concat(rows, ignore_index=True)
    table.to_csv(args.out / "all.csv", index=False)
    lines = [
        f"# Transfer measurement ({args.strategy}, {args.seeds} seeds, budget {' '.join(budget)})",
        "",
        f"Trained on candles up to {args.train_until}; tested {args.test_from} .. {args.test_until}.",
        "",
        "| trained on | tested on | return | Sharpe | skill p | trades | buy & hold return |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, series), g in table.groupby(["trained_on", "series"], sort=False):
        lines.append(
            f"| {name} | {series} | {summary(g.total_return.tolist())} | "
            f"{summary(g.sharpe.tolist())} | {summary(g.skill_p_value.tolist())} | "
            f"{summary(g.trades.astype(float).tolist())} | {g.buyhold_total_return.iloc[0]:.3g} |"
        )
    lines += [
        "",
        "Paired by seed, (c) both minus the single-series model, on the single series:",
        "",
    ]
    for single, series in (("a_btc", BTC), ("b_etc", ETC)):
        for metric in ("total_return", "sharpe"):
            both = table[(table.trained_on == "c_both") & (table.series == series)]
            one = table[(table.trained_on == single) & (table.series == series)]
            diff = (both.set_index("seed")[metric] - one.set_index("seed")[metric]).tolist()
            lines.append(f"- {series} {metric}: c_both - {single} = {summary(diff)}")
    text = "\n".join(lines) + "\n"
    (args.out / "summary.md").write_text(text)
    (args.out / "summary.json").write_text(json.dumps(table.to_dict("records"), default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
