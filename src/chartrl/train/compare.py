"""Train several policies on the same data, split and budget (several seeds each) and compare
their learning: one PNG of learning curves and a table of final validation metrics.

This is the experiment behind the article's question: does CNN+RNN learn better than a CNN alone?
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chartrl.account.fills import MarketRules
from chartrl.train import seedstats
from chartrl.train.dqn import TrainConfig, train
from chartrl.train.env import TrainData
from chartrl.train.evaluation import GreedyRun, run_metrics


def buy_and_hold(data: TrainData, rules: MarketRules, cash: float) -> dict[str, float | None]:
    """The validation metrics of buying at the first validation candle and holding (a reference):
    the backtest's buy-and-hold baseline over the validation decisions."""
    from chartrl.backtest.runner import run_backtest
    from chartrl.strategies.rules import BuyHold

    v = data.validation
    res = run_backtest(
        BuyHold(),
        data.candles,
        data.spec,
        rules,
        initial_cash=cash,
        span=(int(v[0]), int(v[-1]) + 1),
    )
    run = GreedyRun(
        res.actions,
        res.equity,
        res.position,
        res.fills,
        res.fill_index,
        res.candles["open"].to_numpy(np.float64),
        float(res.candles["close"].iloc[-1]),
        rules,
    )
    return run_metrics(run, data.timeframe)


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


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


def never_traded(row: dict[str, Any]) -> bool:
    """A validation without a single fill (no turnover; older rows: no trade and no exposure)."""
    if row.get("val_turnover") not in (None, ""):
        return _f(row["val_turnover"]) == 0.0
    exposure = _f(row.get("val_exposure"))
    return _f(row.get("val_trades")) == 0.0 and not exposure > 0.0


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


CURVES = (
    ("val_total_return", "validation total return", False),
    ("val_sharpe", "validation Sharpe (never traded = 0)", True),
    ("val_trades_per_week", "validation round trips per week", False),
    ("val_exposure", "validation exposure", False),
    ("val_skill_p_value", "validation skill p-value", False),
    ("loss", "DQN TD loss (Huber) since the last point", False),
)


def curve(run: list[dict[str, Any]], key: str, zero_if_flat: bool) -> dict[int, float]:
    """One run's ``key`` over DQN gradient updates: every DQN validation row (the last at each
    update count), the last imitation row standing at update 0 (where DQN starts from)."""
    pts: dict[int, float] = {}
    imitation = [r for r in run if r.get("stage") == "imitation"]
    rows = ([imitation[-1]] if imitation and key != "loss" else []) + [
        r for r in run if r.get("stage") == "dqn"
    ]
    for r in rows:
        v = _f(r.get(key))
        if not math.isfinite(v) and zero_if_flat and never_traded(r):
            v = 0.0
        u = 0 if r.get("stage") == "imitation" else int(_f(r.get("updates")))
        if math.isfinite(v):
            pts[u] = v
    return pts


def plot_curves(histories: dict[str, list[list[dict[str, Any]]]], path: Path) -> None:
    """Learning curves over DQN gradient updates: mean over seeds, band = the seeds' min..max, at
    the update counts every seed was validated at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    for ax, (key, title, zero) in zip(axes.flat, CURVES, strict=True):
        for name, runs in histories.items():
            curves = [curve(h, key, zero) for h in runs if h]
            common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            if not common:
                continue
            y = np.array([[c[u] for u in common] for c in curves])
            (line,) = ax.plot(common, y.mean(axis=0), marker="o", ms=2, label=f"{name} (mean)")
            if len(curves) > 1:
                ax.fill_between(
                    common, y.min(axis=0), y.max(axis=0), color=line.get_color(), alpha=0.2
                )
        ax.set_title(title)
        ax.set_xlabel("DQN gradient updates (0 = after imitation)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle("learning curves: line = mean over seeds, band = min..max of the seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_compare(
    strategies: list[str],
    seeds: int,
    data: TrainData,
    cfg: TrainConfig,
    out: Path | str,
    meta: dict[str, Any],
    *,
    device: torch.device | str = "cpu",
    rules: MarketRules | None = None,
    initial_cash: float = 10_000.0,
    progress: bool = True,
) -> str:
    """Train every strategy with seeds 1..``seeds``; write curves.png, compare.md, compare.json; the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rules = rules or MarketRules()
    histories: dict[str, list[list[dict[str, Any]]]] = {}
    for name in strategies:
        for seed in range(1, seeds + 1):
            run_dir = out / "runs" / f"{name}-seed{seed}"
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)  # a compare run is one experiment: start its runs fresh
            h = train(
                name,
                data,
                replace(cfg, seed=seed),
                run_dir,
                meta,
                device=device,
                rules=rules,
                initial_cash=initial_cash,
                progress=progress,
            ).history
            histories.setdefault(name, []).append(h)
    reference = buy_and_hold(data, rules, initial_cash) if len(data.validation) else None
    summary = summarize(histories)
    paired = paired_differences(histories)
    table = markdown_table(summary, reference, paired)
    plot_curves(histories, out / "curves.png")
    budget = (
        f"{cfg.imitation_epochs if 'imitation' in cfg.stages else 0} imitation + {cfg.epochs if 'dqn' in cfg.stages else 0} DQN epochs"
        + (f", at most {cfg.max_steps_per_epoch} steps/epoch" if cfg.max_steps_per_epoch else "")
    )
    r = meta["data_range"]
    where = f"{r.get('source')}, {r.get('candles')} candles {r.get('from')} .. {r.get('until')} (validation from {r.get('validation_from')})"
    header = (
        f"# Policy comparison\n\nData: {where}; {len(data.train)} training / {len(data.validation)} validation "
        f"decisions; budget per run: {budget}; seeds 1..{seeds}. Values: the last validation of each run, "
        f"as mean ± sample std (ddof=1) [percentile bootstrap 95 % interval of the mean over seeds, "
        f"{seedstats.RESAMPLES:,} resamples]. A seed that never traded counts (return 0, Sharpe 0) "
        "and is named in the last column. Skill p-value: the run's return against 1,000 random "
        "placements of its own round trips (docs/backtest.md).\n\n"
    )
    (out / "compare.md").write_text(header + table + "\n\n![learning curves](curves.png)\n")
    (out / "compare.json").write_text(
        json.dumps(
            {
                "summary": summary,
                "paired_vs_" + REFERENCE: paired,
                "reference_buy_and_hold": reference,
                "budget": budget,
                "data_range": meta["data_range"],
                "fills": meta.get("fills"),
                "histories": histories,
            },
            indent=2,
            default=str,
        )
    )
    return table
