"""Learning curves over DQN gradient updates, shared by ``chartrl compare`` and the sweep report.

Light on purpose (numpy and matplotlib, no torch): the sweep report reads history.csv files and
draws them without loading a model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def to_float(v: Any) -> float:
    """``v`` as a float; NaN for a missing or unreadable value (an empty CSV cell, None)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def never_traded(row: dict[str, Any], split: str = "val") -> bool:
    """A ``split`` run (``val`` or ``test``) without a single fill (no turnover; older rows: no
    trade and no exposure)."""
    if row.get(f"{split}_turnover") not in (None, ""):
        turnover = to_float(row[f"{split}_turnover"])
        if math.isfinite(turnover):
            return turnover == 0.0
    exposure = to_float(row.get(f"{split}_exposure"))
    return to_float(row.get(f"{split}_trades")) == 0.0 and not exposure > 0.0


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
        v = to_float(r.get(key))
        if not math.isfinite(v) and zero_if_flat and never_traded(r):
            v = 0.0
        u = 0 if r.get("stage") == "imitation" else int(to_float(r.get("updates")))
        if math.isfinite(v):
            pts[u] = v
    return pts


def aligned(
    curves: list[dict[int, float]], interpolate: bool = False
) -> tuple[list[int], np.ndarray]:
    """Update counts and a (runs, points) array of the runs' values there. Without
    ``interpolate``: the update counts every run was validated at. With it: every run's update
    counts inside the range all runs cover, each run linearly interpolated between its own
    validations (runs of different lengths, e.g. walk-forward folds, rarely share counts)."""
    curves = [c for c in curves if c]
    if not curves:
        return [], np.empty((0, 0))
    if not interpolate:
        common = sorted(set.intersection(*(set(c) for c in curves)))
        return common, np.array([[c[u] for u in common] for c in curves]).reshape(len(curves), -1)
    lo, hi = max(min(c) for c in curves), min(max(c) for c in curves)
    xs = sorted({u for c in curves for u in c if lo <= u <= hi})
    ys = [np.interp(xs, sorted(c), [c[u] for u in sorted(c)]) for c in curves]
    return xs, np.array(ys).reshape(len(curves), -1)


def _mean_and_band(ax: Any, name: str, xs: list[int], y: np.ndarray, **style: Any) -> None:
    """One group's runs on ``ax``: their mean as a line, their min..max as a band."""
    if not xs:
        return
    (line,) = ax.plot(xs, y.mean(axis=0), marker="o", label=f"{name} (mean)", **style)
    if len(y) > 1:
        ax.fill_between(xs, y.min(axis=0), y.max(axis=0), color=line.get_color(), alpha=0.2)


def plot_curves(
    histories: dict[str, list[list[dict[str, Any]]]],
    path: Path,
    *,
    over: str = "seeds",
    interpolate: bool = False,
) -> None:
    """Learning curves over DQN gradient updates: mean over the runs, band = the runs' min..max,
    at the update counts every run was validated at (``interpolate``: see :func:`aligned`).
    ``over`` names what the runs are (``seeds``; ``seeds and folds`` in a sweep) for the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    for ax, (key, title, zero) in zip(axes.flat, CURVES, strict=True):
        for name, runs in histories.items():
            xs, y = aligned([curve(h, key, zero) for h in runs if h], interpolate)
            _mean_and_band(ax, name, xs, y, ms=2)
        ax.set_title(title)
        ax.set_xlabel("DQN gradient updates (0 = after imitation)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    how = ", runs interpolated between their validations" if interpolate else ""
    fig.suptitle(f"learning curves: line = mean over {over}, band = min..max of the {over}{how}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def imitation_losses(run: list[dict[str, Any]]) -> dict[int, float]:
    """One run's imitation training loss (the weighted cross-entropy against the oracle's labels)
    by imitation epoch."""
    return {
        int(to_float(r.get("epoch"))): to_float(r.get("loss"))
        for r in run
        if r.get("stage") == "imitation" and math.isfinite(to_float(r.get("loss")))
    }


def plot_imitation(
    histories: dict[str, list[list[dict[str, Any]]]], path: Path, *, over: str = "seeds"
) -> None:
    """The imitation loss by epoch: mean over the runs, band = their min..max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, runs in histories.items():
        _mean_and_band(ax, name, *aligned([imitation_losses(h) for h in runs]))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("imitation epoch")
    ax.set_ylabel("training loss (weighted cross-entropy)")
    ax.set_title(f"imitation of the oracle: line = mean over {over}, band = min..max")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
