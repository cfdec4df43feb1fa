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
from chartrl.train.dqn import TrainConfig, train
from chartrl.train.env import TrainData
from chartrl.train.evaluation import VALIDATION_METRICS as METRICS
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


def summarize(histories: dict[str, list[list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """Per strategy: mean and std over seeds of the final epoch's validation metrics and loss."""
    out: dict[str, dict[str, Any]] = {}
    for name, runs in histories.items():
        finals = [h[-1] for h in runs if h]
        row: dict[str, Any] = {"seeds": len(finals)}
        for m in (*METRICS, "loss"):
            key = m if m == "loss" else f"val_{m}"
            vals = np.array([_f(f.get(key)) for f in finals], dtype=np.float64)
            row[m] = {
                "mean": float(np.nanmean(vals)) if np.isfinite(vals).any() else None,
                "std": float(np.nanstd(vals)) if np.isfinite(vals).any() else None,
                "values": [None if not np.isfinite(v) else float(v) for v in vals],
            }
        out[name] = row
    return out


def markdown_table(summary: dict[str, dict[str, Any]], reference: dict[str, float] | None) -> str:
    def cell(d: dict[str, Any], pct: bool) -> str:
        if d["mean"] is None:
            return "n/a"
        k = 100.0 if pct else 1.0
        text = f"{d['mean'] * k:.2f} ± {d['std'] * k:.2f}"
        known = sum(v is not None for v in d["values"])
        # A seed whose policy never traded has no Sharpe: say so rather than hide it in the mean.
        return (
            text if known == len(d["values"]) else f"{text} ({known} of {len(d['values'])} seeds)"
        )

    lines = [
        "| strategy | seeds | val return % | val Sharpe | val max DD % | val round trips | final loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in summary.items():
        lines.append(
            f"| {name} | {r['seeds']} | {cell(r['total_return'], True)} | {cell(r['sharpe'], False)} | "
            f"{cell(r['max_drawdown'], True)} | {cell(r['trades'], False)} | {cell(r['loss'], False)} |"
        )
    if reference:
        sharpe = "n/a" if reference["sharpe"] is None else f"{reference['sharpe']:.2f}"
        lines.append(
            f"| buy & hold (reference) | - | {reference['total_return'] * 100:.2f} | {sharpe} | "
            f"{reference['max_drawdown'] * 100:.2f} | {reference['trades']:.0f} | - |"
        )
    return "\n".join(lines)


def plot_curves(histories: dict[str, list[list[dict[str, Any]]]], path: Path) -> None:
    """Imitation loss, DQN loss and validation return per epoch: mean line, band = seed spread (min..max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [
        ("imitation", "loss", "imitation loss (weighted CE)"),
        ("dqn", "loss", "DQN loss (Huber TD)"),
        (None, "val_total_return", "validation total return"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (stage, key, title) in zip(axes, panels, strict=True):
        for name, runs in histories.items():
            rows = [[r for r in h if stage is None or r["stage"] == stage] for h in runs]
            n = min((len(r) for r in rows), default=0)
            if n == 0:
                continue
            y = np.array([[_f(r[i].get(key)) for i in range(n)] for r in rows])
            if not np.isfinite(
                y
            ).any():  # e.g. no DQN update happened (learning_starts not reached)
                continue
            x = np.arange(1, n + 1)
            mean = np.nanmean(y, axis=0)
            (line,) = ax.plot(x, mean, marker="o", ms=3, label=name)
            if len(rows) > 1:
                ax.fill_between(
                    x, np.nanmin(y, axis=0), np.nanmax(y, axis=0), color=line.get_color(), alpha=0.2
                )
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (imitation then DQN)" if stage is None else f"{stage} epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
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
    table = markdown_table(summary, reference)
    plot_curves(histories, out / "curves.png")
    budget = (
        f"{cfg.imitation_epochs if 'imitation' in cfg.stages else 0} imitation + {cfg.epochs if 'dqn' in cfg.stages else 0} DQN epochs"
        + (f", at most {cfg.max_steps_per_epoch} steps/epoch" if cfg.max_steps_per_epoch else "")
    )
    r = meta["data_range"]
    where = f"{r.get('source')}, {r.get('candles')} candles {r.get('from')} .. {r.get('until')} (validation from {r.get('validation_from')})"
    header = (
        f"# Policy comparison\n\nData: {where}; {len(data.train)} training / {len(data.validation)} validation "
        f"decisions; budget per run: {budget}; seeds 1..{seeds}. Values: mean ± std over seeds of the last epoch; 'k of n seeds' where a seed has no value "
        "(a policy that never traded has no Sharpe).\n\n"
    )
    (out / "compare.md").write_text(header + table + "\n\n![learning curves](curves.png)\n")
    (out / "compare.json").write_text(
        json.dumps(
            {
                "summary": summary,
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
