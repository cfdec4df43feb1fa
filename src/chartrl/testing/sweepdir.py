"""A synthetic ``chartrl sweep`` output directory (results.csv, trials/*/history.csv and
test_equity.csv, as docs/experiments.md lays them out), for the report's tests and benchmark.

No training happens: each run's test returns are drawn as normal noise around its strategy's
drift, and its metrics are derived from them, so the statistics have something true to find.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chartrl.experiments.results import COLUMNS  # the one definition the sweep writes

START = pd.Timestamp("2024-01-01", tz="UTC")
HOURS_A_YEAR = 8760


def history(edge: float) -> list[dict]:
    """A trainer history.csv: 3 imitation epochs (loss 0.6, 0.5, 0.4 with an edge; else 0.6,
    0.65, 0.5: one rise), then DQN validations at 10 and 20 updates."""
    base = {"kind": "eval", "loss": 0.5, "val_turnover": 100.0, "val_trades": 2}
    losses = (0.6, 0.5, 0.4) if edge > 0 else (0.6, 0.65, 0.5)
    return [
        *(
            {**base, "stage": "imitation", "epoch": i, "updates": 0, "val_total_return": 0.0}
            | {"kind": "epoch", "loss": loss}
            for i, loss in enumerate(losses, 1)
        ),
        {**base, "stage": "dqn", "epoch": 1, "updates": 10, "val_total_return": edge / 2},
        {**base, "stage": "dqn", "epoch": 1, "updates": 20, "val_total_return": edge},
    ]


def _write_trial(root: Path, tid: str, edge: float, returns: np.ndarray, start: pd.Timestamp):
    d = root / "trials" / tid
    d.mkdir(parents=True)
    pd.DataFrame(history(edge)).to_csv(d / "history.csv", index=False)
    equity = 10_000 * np.concatenate([[1.0], np.cumprod(1 + returns)])
    ts = pd.date_range(start, periods=len(equity), freq="h")
    bh = 10_000 * np.linspace(1.0, 1.01, len(equity))
    pd.DataFrame(
        {"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S+00:00"), "equity": equity, "buy_hold": bh}
    ).to_csv(d / "test_equity.csv", index=False)


def make_sweep_dir(
    root: Path,
    *,
    strategies: Sequence[tuple[str, float]] = (("cnn", 0.001), ("gru", 0.0)),
    configs: int = 1,
    seeds: Sequence[int] = (1, 2),
    folds: int = 2,
    candles: int = 60,
    fail: Sequence[tuple[str, int, int]] = (),
    flat: tuple[str, int, int] | None = None,
    rng_seed: int = 0,
) -> Path:
    """Write a sweep DIR: ``strategies`` (name, per-candle drift) x ``configs`` learning rates x
    ``seeds`` x ``folds`` hourly test ranges of ``candles``. ``fail`` lists the (strategy, seed,
    fold) of failed runs (every configuration's); ``flat`` one run that never trades."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for strategy, drift in strategies:
        for k in range(configs):
            lr = 0.001 * (k + 1)
            for seed in seeds:
                for fold in range(folds):
                    tid = (
                        f"{strategy}-s{seed}-f{fold}"
                        if configs == 1
                        else (f"{strategy}-c{k}-s{seed}-f{fold}")
                    )
                    row = dict.fromkeys(COLUMNS, "")
                    row.update(
                        trial_id=tid,
                        strategy=strategy,
                        config_id=f"{strategy}|lr={lr:g}",
                        params=json.dumps({"lr": lr}),
                        seed=seed,
                        fold=fold,
                        status="done",
                        attempts=1,
                        chosen_epoch=1,
                        chosen_updates=20,
                        seconds=1.5,
                    )
                    if (strategy, seed, fold) in fail:
                        row.update(
                            status="failed",
                            attempts=2,
                            error="RuntimeError: CUDA out of memory\nTraceback ...",
                        )
                        rows.append(row)
                        continue
                    never = (strategy, seed, fold) == flat
                    r = np.zeros(candles) if never else rng.normal(drift, 0.01, candles)
                    total = float(np.prod(1 + r) - 1)
                    sd = float(np.std(r, ddof=1))
                    row.update(
                        test_candles=candles + 1,
                        test_total_return=total,
                        test_sharpe="" if never else r.mean() / sd * math.sqrt(HOURS_A_YEAR),
                        test_max_drawdown=0.0 if never else 0.02,
                        test_trades=0 if never else 3,
                        test_trades_per_week=0.0 if never else 2.5,
                        test_exposure=0.0 if never else 0.4,
                        test_turnover=0.0 if never else 3e4,
                        test_fees_paid=0.0 if never else 30.0,
                        test_skill_p_value=1.0 if never else (0.01 if drift > 0 else 0.4),
                        test_skill_percentile=50.0,
                        test_buy_hold_return=0.01,
                        test_buy_hold_sharpe=1.0,
                        val_total_return=0.01,
                    )
                    start = START + pd.Timedelta(hours=fold * (candles + 40))
                    _write_trial(root, tid, total, r, start)
                    rows.append(row)
    with open(root / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return root
