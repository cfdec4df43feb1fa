"""Comparing the learning of several policies across seeds: summaries of their final validation
figures (sample std, bootstrap interval, never-traded seeds counted), paired differences against
``cnn``, learning curves over gradient updates, and buy-and-hold over a validation part.

Running the comparison itself is a one-fold sweep (`chartrl compare`, chartrl.experiments): one
engine for every experiment of many runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from chartrl.account.fills import MarketRules
from chartrl.train import seedstats

# The curve helpers live in train/curves.py (shared with the sweep report); re-exported here.
from chartrl.train.curves import CURVES, curve, never_traded, plot_curves  # noqa: F401
from chartrl.train.curves import to_float as _f
from chartrl.train.env import TrainData
from chartrl.train.evaluation import GreedyRun, pooled_metrics, run_metrics


def buy_and_hold(data: TrainData, rules: MarketRules, cash: float) -> dict[str, float | None]:
    """The validation metrics of buying at the first validation candle and holding (a reference):
    the backtest's buy-and-hold baseline over the validation decisions; with several series, on
    each series' own candles, pooled as validation pools them (evaluation.pooled_metrics)."""
    from chartrl.backtest.runner import run_backtest
    from chartrl.strategies.rules import BuyHold

    runs = []
    for p in data.series or [None]:
        lo, hi = (0, len(data.candles)) if p is None else (p.start, p.stop)
        v = (data.validation if p is None else p.validation) - lo
        r = rules if p is None or p.rules is None else p.rules
        res = run_backtest(
            BuyHold(),
            data.candles.iloc[lo:hi].reset_index(drop=True),
            data.spec,
            r,
            initial_cash=cash,
            span=(int(v[0]), int(v[-1]) + 1),
        )
        runs.append(
            GreedyRun(
                res.actions,
                res.equity,
                res.position,
                res.fills,
                res.fill_index,
                res.candles["open"].to_numpy(np.float64),
                float(res.candles["close"].iloc[-1]),
                r,
            )
        )
    each = [run_metrics(run, data.timeframe) for run in runs]
    return each[0] if len(runs) == 1 else pooled_metrics(runs, each, data.timeframe)


TABLE_METRICS = (
    "total_return",
    "sharpe",
    "max_drawdown",
    "trades",
    "trades_per_week",
    "exposure",
    "skill_p_value",
)
"""What the table shows of each strategy's final validation, all across seeds."""
PAIRED_METRICS = ("total_return", "sharpe", "trades_per_week", "exposure")
"""What is differenced seed by seed against the reference strategy."""
REFERENCE = "cnn"


def final_values(run: list[dict[str, Any]], metric: str) -> float:
    """The run's last validation figure of ``metric``. A run that never traded has no Sharpe; it
    counts as 0, what doing nothing earns (its return is 0 too), and is flagged, never dropped."""
    row = run[-1]
    v = _f(row.get("loss" if metric == "loss" else f"val_{metric}"))
    if not math.isfinite(v) and metric == "sharpe" and never_traded(row):
        return 0.0
    return v


def summarize(histories: dict[str, list[list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """Per strategy, per metric of its runs' final rows: mean, sample std, bootstrap 95 % interval
    of the mean, the per-seed values; and which seeds (1-based) never traded."""
    out: dict[str, dict[str, Any]] = {}
    for name, runs in histories.items():
        runs = [h for h in runs if h]
        row: dict[str, Any] = {
            "seeds": len(runs),
            "never_traded": [i + 1 for i, h in enumerate(runs) if never_traded(h[-1])],
        }
        for m in (*TABLE_METRICS, "turnover", "fees_paid", "skill_percentile", "loss"):
            vals = [final_values(h, m) for h in runs]
            known = [v for v in vals if math.isfinite(v)]
            row[m] = {**seedstats.describe(known), "missing": len(vals) - len(known)}
        out[name] = row
    return out


def paired_differences(
    histories: dict[str, list[list[dict[str, Any]]]], reference: str = REFERENCE
) -> dict[str, dict[str, Any]]:
    """Per strategy other than ``reference``: the per-seed differences of its final validation
    figures minus the reference's for the same seed, with mean, std and interval."""
    if reference not in histories:
        return {}
    ref = histories[reference]
    out: dict[str, dict[str, Any]] = {}
    for name, runs in histories.items():
        if name == reference:
            continue
        n = min(len(runs), len(ref))
        out[name] = {
            m: seedstats.paired(
                [final_values(runs[i], m) for i in range(n)],
                [final_values(ref[i], m) for i in range(n)],
            )
            for m in PAIRED_METRICS
        }
    return out


def markdown_table(
    summary: dict[str, dict[str, Any]],
    reference: dict[str, float] | None,
    paired: dict[str, dict[str, Any]] | None = None,
    reference_name: str = REFERENCE,
) -> str:
    """The comparison as Markdown: final validation across seeds, buy & hold, paired differences
    (against ``reference_name``, the name ``paired_differences`` was given)."""
    fmt = seedstats.fmt
    lines = [
        "| strategy | seeds | val return % | val Sharpe | val max DD % | val round trips "
        "| trades / week | exposure % | skill p-value | never traded |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in summary.items():
        flag = ", ".join(f"seed {s}" for s in r["never_traded"]) or "-"
        lines.append(
            f"| {name} | {r['seeds']} | {fmt(r['total_return'], 100)} | {fmt(r['sharpe'])} | "
            f"{fmt(r['max_drawdown'], 100)} | {fmt(r['trades'], 1, 1)} | "
            f"{fmt(r['trades_per_week'])} | {fmt(r['exposure'], 100, 1)} | "
            f"{fmt(r['skill_p_value'], 1, 3)} | {flag} |"
        )
    if reference:
        sharpe = "n/a" if reference["sharpe"] is None else f"{reference['sharpe']:.2f}"
        skill = reference.get("skill_p_value")
        lines.append(
            f"| buy & hold (reference) | - | {reference['total_return'] * 100:.2f} | {sharpe} | "
            f"{reference['max_drawdown'] * 100:.2f} | {reference['trades']:.0f} | "
            f"{reference.get('trades_per_week', 0.0):.2f} | "
            f"{reference.get('exposure', 1.0) * 100:.1f} | "
            f"{'n/a' if skill is None else f'{skill:.3f}'} | - |"
        )
    if paired:
        lines += [
            "",
            f"Paired by seed, minus `{reference_name}` (mean ± std [95 % interval] of the differences):",
            "",
            "| strategy | Δ val return % | Δ val Sharpe | Δ trades / week | Δ exposure % |",
            "|---|---|---|---|---|",
        ]
        for name, d in paired.items():
            lines.append(
                f"| {name} | {fmt(d['total_return'], 100)} | {fmt(d['sharpe'])} | "
                f"{fmt(d['trades_per_week'])} | {fmt(d['exposure'], 100, 1)} |"
            )
    return "\n".join(lines)
