"""The sweep report's pictures: means with 95 % intervals per strategy, the paired differences
against the reference, and the CSCV logits with the IS-vs-OOS degradation (matplotlib, Agg)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from chartrl.experiments.pbo import PBOResult, logit_bounds

PANELS = (
    ("total_return", "test return %", 100.0),
    ("sharpe", "test Sharpe (annualised)", 1.0),
    ("max_drawdown", "test max drawdown %", 100.0),
    ("trades_per_week", "round trips per week", 1.0),
    ("exposure", "exposure %", 100.0),
)


METRIC_LABEL = {"sharpe": "Sharpe per candle", "mean": "mean fold Sharpe"}
"""What ``PBOResult.metric`` measures, for the axes (the fold matrix holds test Sharpe)."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.ERROR)  # font fallback notices
    import matplotlib.pyplot as plt

    return plt


def _forest(ax, names: list[str], stats: list[dict[str, Any]], scale: float) -> None:
    """One row per name: the mean as a dot, the bootstrap 95 % interval as a bar, the single
    values as faint points (so two runs never pass for a tight estimate)."""
    for y, d in enumerate(stats):
        if d.get("mean") is None or not math.isfinite(d["mean"]):
            continue
        vals = np.asarray(d.get("values", []), dtype=float) * scale
        ax.plot(vals, np.full(len(vals), y), "o", color="0.6", ms=3, alpha=0.6)
        if d.get("ci95") is not None:
            lo, hi = (v * scale for v in d["ci95"])
            ax.plot([lo, hi], [y, y], color="C0", lw=2.5)
        ax.plot([d["mean"] * scale], [y], "D", color="C0", ms=6)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)


def plot_metrics(summary: dict[str, dict[str, Any]], path: Path) -> None:
    """Per strategy, each test metric's mean (diamond), 95 % interval (bar) and runs (dots)."""
    plt = _pyplot()
    names = list(summary)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 1.8 + 0.5 * len(names)))
    for ax, (key, title, scale) in zip(axes, PANELS, strict=True):
        _forest(ax, names, [summary[n][key] for n in names], scale)
        ax.set_title(title, fontsize=10)
        if ax is not axes[0]:
            ax.set_yticklabels([])
    fig.suptitle("test metrics: mean (diamond), bootstrap 95 % interval (bar), runs (dots)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_paired(paired: dict[str, dict[str, Any]], reference: str, path: Path) -> None:
    """Per strategy, the (seed, fold) differences minus ``reference``, with a zero line."""
    plt = _pyplot()
    names = list(paired)
    panels = [p for p in PANELS if p[0] in next(iter(paired.values()))]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 1.8 + 0.5 * len(names)))
    for ax, (key, title, scale) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.axvline(0.0, color="k", lw=0.8)
        _forest(ax, names, [paired[n][key] for n in names], scale)
        ax.set_title(f"Δ {title}", fontsize=10)
    fig.suptitle(f"paired by (seed, fold), minus {reference}: mean, 95 % interval, pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pbo(results: dict[str, PBOResult], path: Path) -> None:
    """Per CSCV input: the histogram of the logits (left of 0 = the IS winner is at or below
    the OOS median) and the winner's IS against OOS metric (the performance degradation)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(results), 2, figsize=(12, 4 * len(results)), squeeze=False)
    for (hist, scatter), (label, res) in zip(axes, results.items(), strict=True):
        hist.hist(res.logits, bins=min(40, max(5, res.combinations // 5)), color="C0", alpha=0.8)
        hist.axvline(0.0, color="C3", lw=1.5)
        lo, hi = logit_bounds(res.configs)
        hist.set_xlim(lo - 0.2, hi + 0.2)  # the logits N configurations allow, 0 in the middle
        hist.set_title(f"{label}: CSCV logits, PBO {res.pbo:.2f} ({res.combinations:,} splits)")
        hist.set_xlabel("logit of the IS winner's relative OOS rank")
        hist.set_ylabel("combinations")
        scatter.plot(res.is_perf, res.oos_perf, "o", ms=3, alpha=0.5)
        fit = res.degradation
        if fit is not None:
            x = np.linspace(float(res.is_perf.min()), float(res.is_perf.max()), 2)
            scatter.plot(
                x, fit[0] * x + fit[1], color="C3", label=f"OOS = {fit[0]:.2f} IS + {fit[1]:.3g}"
            )
            scatter.legend(fontsize=8)
        scatter.axhline(0.0, color="k", lw=0.8)
        what = METRIC_LABEL.get(res.metric, res.metric)
        scatter.set_title(f"{label}: the IS winner, in vs out of sample")
        scatter.set_xlabel(f"in-sample {what}")
        scatter.set_ylabel(f"out-of-sample {what}")
        scatter.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
