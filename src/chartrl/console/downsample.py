"""Fewer points for a plot without hiding what matters in it: the min and max of every series in
every bucket (the M4 / min-max idea), so no dip, spike or drawdown a screen could show is lost.

A year of hourly decisions is 8,760 points per line; the dashboard's plot is about 1,200 pixels
wide. Plain decimation (every k-th point) or averaging would shave the troughs off a drawdown;
keeping each bucket's extremes keeps the drawn envelope, the global minimum and maximum included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def envelope_indices(series: Sequence[np.ndarray], points: int) -> np.ndarray:
    """Sorted, unique indices into equal-length ``series`` (one shared x axis), at most ``points``
    of them: the first and the last, and in each of equal buckets every series' argmin and argmax.
    Every index when there are no more than ``points``."""
    n = len(series[0]) if series else 0
    if any(len(s) != n for s in series):
        raise ValueError("series of different lengths cannot share one x axis")
    per_bucket = 2 * len(series)
    if n <= points or per_bucket == 0:
        return np.arange(n)
    if points < per_bucket + 2:
        raise ValueError(f"points={points} is fewer than one bucket needs ({per_bucket + 2})")
    width = -(-n // ((points - 2) // per_bucket))  # ceil: buckets * width >= n
    buckets = -(-n // width)
    starts = np.arange(buckets) * width
    keep = [np.array([0, n - 1])]
    for s in series:
        # Pad the last, shorter bucket with NaN so every bucket is one row; nan-aware arg-extremes.
        grid = np.full(buckets * width, np.nan)
        grid[:n] = np.asarray(s, dtype=np.float64)
        grid = grid.reshape(buckets, width)
        finite = ~np.isnan(grid).all(axis=1)  # a bucket all NaN (missing values) has no extreme
        rows = grid[finite]
        keep += [starts[finite] + np.nanargmin(rows, 1), starts[finite] + np.nanargmax(rows, 1)]
    return np.unique(np.concatenate(keep))
