"""The sweep report's pictures: the walk-forward fold layout, means with 95 % intervals per
strategy, the paired differences against the reference, and the CSCV logits with the IS-vs-OOS
degradation (matplotlib, Agg)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chartrl.experiments.pbo import PBOResult, logit_bounds

if TYPE_CHECKING:
    from chartrl.backtest.walkforward import Fold

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


RANGES = (("train", "training", "C0"), ("val", "validation", "C2"), ("test", "test", "C3"))
"""A fold's ranges in the layout figure: Fold attribute, label, colour."""


def _date_ticks(ax, n: int, timestamps: Any) -> None:
    """Candle indices on the x axis, each with its date below when the candles are known."""
    ticks = np.linspace(0, n - 1, 7).round().astype(int)
    labels = [f"{t:,}" for t in ticks]
    if timestamps is not None:
        labels = [f"{t:,}\n{timestamps.iloc[t]:%Y-%m-%d}" for t in ticks]
    ax.set_xticks(ticks, labels, fontsize=8)


def plot_folds(folds: list[Fold], n: int, path: Path, timestamps: Any = None) -> None:
    """One row per fold over the ``n`` candles: its training, validation and test ranges (with
    their candle counts) and the purge gaps between them, hatched; after a fold's test range,
    the candles it never reads are left blank. ``timestamps`` (a Series) dates the axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 1.6 + 0.6 * len(folds)))
    gaps = set()
    for y, f in enumerate(folds):
        ax.plot([0, n - 1], [y, y], color="0.8", lw=0.8, zorder=0)
        for attr, label, colour in RANGES:
            a, b = getattr(f, attr)
            ax.broken_barh([(a, b - a + 1)], (y - 0.32, 0.64), color=colour, label=label)
            ax.text(
                (a + b) / 2,
                y,
                f"{b - a + 1:,}",
                ha="center",
                va="center",
                fontsize=8,
                color="white",
            )
        for a, b in ((f.train[1] + 1, f.val[0] - 1), (f.val[1] + 1, f.test[0] - 1)):
            if b >= a:
                gaps.add(b - a + 1)
                ax.broken_barh(
                    [(a, b - a + 1)],
                    (y - 0.32, 0.64),
                    facecolor="0.92",
                    edgecolor="0.35",
                    hatch="////",
                    lw=0.0,
                    label="purge gap",
                )
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one entry per kind, not per fold
    ax.legend(
        unique.values(),
        unique.keys(),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    ax.set_yticks(range(len(folds)), [f"fold {f.index}" for f in folds])
    ax.set_ylim(len(folds) - 0.5, -0.5)
    ax.set_xlim(-0.01 * n, 1.01 * n)
    _date_ticks(ax, n, timestamps)
    gap = f"purge gap {', '.join(map(str, sorted(gaps)))} candles" if gaps else "no purge gap"
    fig.suptitle(f"walk-forward folds: {len(folds)} over {n:,} candles, {gap}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


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
