"""Issue 10's "README defaults" check: does `chartrl train --strategy cnn --epochs 3` overtrade?

For each of ``--seeds`` seeds: train ``--strategy`` with the README's defaults (only ``--epochs``
given) on ``--symbol`` up to ``--until``, then backtest its ``model.pt`` (the last network) on the
next ``--months`` months; the dp oracle (default penalty) and buy-and-hold on the same candles.
Prints a table (round trips, trades a week, exposure, return, skill p-value, non-hold greedy
actions; from each run's history.csv the validation round trips after each imitation epoch, the
DQN validation points that traded, the run's seconds and the share of them spent validating) and

    RESULT strategy=cnn symbol=ETC/BTC seeds=3 round_trips=a,b,c oracle_round_trips=34
    worst_ratio=<max model/oracle> target_ratio=2 met=<yes|no> eval_share_max=<x>
    eval_target=0.10 eval_met=<yes|no>

Everything runs through the CLI, ``--jobs`` trainings at a time (one torch thread each). Models
and backtests already in ``--out`` are reused, so an interrupted run continues.

    .venv/bin/chartrl import ../shared/data/Binance_ETCBTC_1h.csv --symbol ETC/BTC --data-dir D
    nice .venv/bin/python benchmarks/readme_defaults.py --data-dir D --symbol ETC/BTC \
        --until 2020-06-30T23:00 --out /tmp/readme [--seeds 3] [--jobs 2] [-- extra train options]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd


def chartrl(*argv: str) -> None:
    cmd = [sys.executable, "-m", "chartrl", "--log-level", "warning", *argv]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"  {time.perf_counter() - t:6.0f} s  chartrl {' '.join(argv)}", flush=True)


def backtest(series: list[str], out: Path, test: list[str], *what: str) -> dict:
    if not (out / "metrics.json").exists():
        chartrl(
            "backtest", *what, *series, *test, "--threads", "1", "--no-progress", "--out", str(out)
        )
    metrics = json.loads((out / "metrics.json").read_text())
    actions = pd.read_csv(out / "decisions.csv")["action"]
    metrics["non_hold"] = float((actions != "hold").mean())
    return metrics


def run_figures(history: Path) -> dict:
    """From a run's history.csv: the validation round trips after each imitation epoch (what
    imitation alone taught), how many DQN validation points traded at all, the run's seconds and
    the share validating took of them. An epoch row's ``seconds`` include the validations made
    inside the epoch (``eval_seconds``) but not the one at its end (that row's
    ``val_seconds``)."""
    h = pd.read_csv(history)
    epochs = h[h["kind"] == "epoch"]
    points = h[h["val_total_return"].notna()]
    dqn = points[points["stage"] == "dqn"]
    total = float(epochs["seconds"].sum() + epochs["val_seconds"].sum())
    imitation = epochs[epochs["stage"] == "imitation"]["val_trades"]
    return {
        "imitation_val_trades": "/".join(str(int(x)) for x in imitation) or "-",
        "dqn_points_traded": f"{int((dqn['val_trades'] > 0).sum())} of {len(dqn)}",
        "train_s": round(total),
        "eval_share": float(points["val_seconds"].sum()) / total,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--symbol", required=True)
    p.add_argument("--exchange", default="binance")
    p.add_argument("--timeframe", default="1h")
    p.add_argument("--until", required=True, help="last training candle (inclusive)")
    p.add_argument("--months", type=int, default=3, help="test months after --until")
    p.add_argument("--strategy", default="cnn")
    p.add_argument("--epochs", default="3")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("extra", nargs="*", help="more train options (after --)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    series = ["--exchange", args.exchange, "--symbol", args.symbol]
    series += ["--timeframe", args.timeframe, "--data-dir", args.data_dir]
    start = pd.Timestamp(args.until).floor("D") + pd.Timedelta(days=1)
    end = start + pd.DateOffset(months=args.months) - pd.Timedelta(hours=1)
    test = ["--from", start.strftime("%Y-%m-%d"), "--until", end.strftime("%Y-%m-%dT%H:%M")]

    def run(seed: int) -> dict:
        model = args.out / f"{args.strategy}-seed{seed}"
        if not (model / "model.json").exists():
            chartrl(
                "train", "--strategy", args.strategy, "--epochs", args.epochs, *series,
                "--until", args.until, "--seed", str(seed), "--threads", "1", "--no-progress",
                *args.extra, "--out", str(model),
            )  # fmt: skip
        m = backtest(
            series, args.out / f"bt-{args.strategy}-seed{seed}", test, "--model", str(model)
        )
        return {"run": f"{args.strategy} seed {seed}", **m, **run_figures(model / "history.csv")}

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run, range(1, args.seeds + 1)))
    oracle = backtest(series, args.out / "bt-oracle", test, "--strategy", "oracle")
    hold = backtest(series, args.out / "bt-buyhold", test, "--strategy", "buyhold")
    table = pd.DataFrame(
        [*rows, {"run": "oracle (dp, cheats)", **oracle}, {"run": "buy and hold", **hold}]
    )
    cols = [
        "run",
        "trades",
        "trades_per_week",
        "exposure",
        "total_return",
        "skill_p_value",
        "non_hold",
        "imitation_val_trades",
        "dqn_points_traded",
        "train_s",
        "eval_share",
    ]
    print(f"\n{args.symbol} {test[1]} .. {test[3]}, {int(oracle['candles'])} decisions")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for _, r in table[cols].iterrows():
        print("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r) + " |")
    share = max(r["eval_share"] for r in rows)
    trips = [int(r["trades"]) for r in rows]
    ratio = max(trips) / max(int(oracle["trades"]), 1)
    print(
        f"RESULT strategy={args.strategy} symbol={args.symbol} seeds={args.seeds} "
        f"round_trips={','.join(map(str, trips))} oracle_round_trips={int(oracle['trades'])} "
        f"worst_ratio={ratio:.3g} target_ratio=2 met={'yes' if ratio <= 2 else 'no'} "
        f"eval_share_max={share:.3f} eval_target=0.10 eval_met={'yes' if share <= 0.10 else 'no'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
