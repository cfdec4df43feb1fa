"""Statistics across seeds for ``chartrl compare``: sample spread, a bootstrap interval of the
mean, and per-seed paired differences against a reference strategy.

A handful of seeds is a small sample, so every figure is reported with its spread: the sample
standard deviation (ddof=1, the estimate of the population's, not the spread of these few) and a
percentile bootstrap 95 % interval of the mean (resampling seeds with replacement). With one seed
there is no spread and no interval (None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95
SEED = 0


def sample_std(values: Sequence[float]) -> float | None:
    """Standard deviation with ddof=1; None for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.std(v, ddof=1)) if len(v) > 1 else None


def bootstrap_ci(
    values: Sequence[float], level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (None for fewer than two)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    # Clip to the sample's range: a float mean of equal values can stray by an ulp past it.
    vmin, vmax = float(v.min()), float(v.max())
    return min(max(float(lo), vmin), vmax), max(min(float(hi), vmax), vmin)


def describe(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std, bootstrap interval of the mean and the values themselves."""
    v = [float(x) for x in values]
    return {
        "mean": float(np.mean(v)) if v else None,
        "std": sample_std(v),
        "ci95": bootstrap_ci(v),
        "values": v,
    }


def paired(values: Sequence[float], reference: Sequence[float]) -> dict[str, Any]:
    """``describe`` of the per-seed differences ``values[i] - reference[i]`` (same seed, same
    data and budget: the pairing removes what the seeds share)."""
    if len(values) != len(reference):
        raise ValueError(f"{len(values)} seeds against {len(reference)} of the reference")
    return describe([a - b for a, b in zip(values, reference, strict=True)])


def fmt(d: dict[str, Any], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std [lo, hi]`` (values times ``scale``); ``n/a`` without a mean."""
    if d.get("mean") is None or not math.isfinite(d["mean"]):
        return "n/a"
    text = f"{d['mean'] * scale:.{digits}f}"
    if d.get("std") is not None:
        text += f" ± {d['std'] * scale:.{digits}f}"
    if d.get("ci95") is not None:
        lo, hi = d["ci95"]
        text += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return text
