"""Probability of backtest overfitting (PBO) by combinatorially symmetric cross-validation.

Bailey, Borwein, Lopez de Prado & Zhu (2015), "The Probability of Backtest Overfitting", Journal
of Computational Finance 20(4). Given a performance matrix of T rows (periods, or blocks such as
walk-forward folds) by N configurations:

1. split the rows into S (even) contiguous blocks;
2. for each of the C(S, S/2) ways to pick S/2 blocks as the in-sample (IS) set, the other S/2
   being out-of-sample (OOS), compute every configuration's metric on both sets;
3. take the IS winner n*, its relative OOS rank w = rank(OOS[n*]) / (N + 1) (ranks 1..N,
   ascending, ties averaged), and the logit l = ln(w / (1 - w));
4. PBO = the share of combinations with l <= 0: how often the in-sample winner is no better than
   the median configuration out of sample.

Two inputs, two metrics: per-period returns (rows = periods, metric = the Sharpe ratio of the
rows of a block set, mean / sample std) and a fold-level metric matrix (rows = folds, each fold
one block, metric = the mean of the folds' values). Ties for the IS winner (identical columns)
average the tied configurations' OOS ranks, so the result does not depend on column order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from chartrl.errors import DataError

MAX_BLOCKS = 16
"""The paper's choice for per-period returns: C(16, 8) = 12,870 combinations."""
MIN_BLOCK_ROWS = 10
"""Fewest periods per block when splitting returns: a Sharpe of fewer is mostly noise."""


@dataclass(frozen=True)
class PBOResult:
    """CSCV outcome; arrays have one entry per combination (IS winner's figures)."""

    pbo: float
    logits: np.ndarray
    oos_rank: np.ndarray
    """Relative OOS rank w of the IS winner, in (0, 1); 1 = best out of sample."""
    is_perf: np.ndarray
    """The IS winner's in-sample metric."""
    oos_perf: np.ndarray
    """The same configuration's out-of-sample metric (performance degradation: vs ``is_perf``)."""
    blocks: int
    configs: int
    metric: str

    @property
    def combinations(self) -> int:
        return len(self.logits)

    @property
    def prob_oos_loss(self) -> float:
        """Share of combinations whose IS winner has a negative OOS metric."""
        return float(np.mean(self.oos_perf < 0))

    @property
    def degradation(self) -> tuple[float, float] | None:
        """(slope, intercept) of the least-squares line OOS = a * IS + b over the combinations
        (the paper's performance degradation); None when the IS figures do not vary."""
        if len(self.is_perf) < 2 or float(np.ptp(self.is_perf)) == 0.0:
            return None
        a, b = np.polyfit(self.is_perf, self.oos_perf, 1)
        return float(a), float(b)


def _check(matrix: np.ndarray, what: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise DataError(f"PBO needs a 2-D {what} x configurations matrix, got {m.ndim}-D")
    if m.shape[1] < 2:
        raise DataError(
            f"PBO needs at least 2 configurations to choose among, got {m.shape[1]}: "
            "sweep more strategies or parameters"
        )
    bad = int(np.count_nonzero(~np.isfinite(m)))
    if bad:
        raise DataError(
            f"PBO matrix has {bad} missing or non-finite value(s): "
            "drop the configurations without a result first"
        )
    return m


def _check_blocks(blocks: int, rows: int, what: str) -> None:
    if blocks < 2:
        raise DataError(f"PBO needs at least 2 blocks, got {blocks} ({what})")
    if blocks % 2:
        raise DataError(
            f"PBO needs an even number of blocks (half in sample, half out), got {blocks} ({what})"
        )
    if blocks > rows:
        raise DataError(f"PBO cannot split {rows} {what} into {blocks} blocks")
    if blocks > MAX_BLOCKS:
        # C(S, S/2) grows fast (24 blocks: 2.7 million combinations); 16 is the paper's choice.
        raise DataError(f"PBO takes at most {MAX_BLOCKS} blocks, got {blocks} ({what})")


def default_blocks(rows: int, most: int = MAX_BLOCKS, min_rows: int = MIN_BLOCK_ROWS) -> int:
    """The largest even block count up to ``most`` leaving ``min_rows`` periods per block
    (0 when even 2 blocks would be too short)."""
    s = min(most, rows // min_rows)
    return s - s % 2


def _masks(blocks: int) -> np.ndarray:
    """(C(S, S/2), S) 0/1 matrix: row c marks the IS blocks of combination c."""
    combos = list(combinations(range(blocks), blocks // 2))
    m = np.zeros((len(combos), blocks))
    for c, idx in enumerate(combos):
        m[c, list(idx)] = 1.0
    return m


def _avg_rank(row: np.ndarray, value: float) -> float:
    """Rank (1..N, ascending, ties averaged) ``value`` would take among ``row``'s values."""
    return float(np.count_nonzero(row < value)) + (np.count_nonzero(row == value) + 1) / 2.0


def _cscv(stat: Callable[[np.ndarray], np.ndarray], blocks: int, configs: int, metric: str):
    """``stat(mask)`` maps (C, S) block weights to the (C, N) metric of those block sets."""
    is_mask = _masks(blocks)
    r_is, r_oos = stat(is_mask), stat(1.0 - is_mask)
    best = r_is.max(axis=1, keepdims=True)
    winners = r_is == best
    ranks = np.empty(len(is_mask))
    oos_perf = np.empty(len(is_mask))
    for c in range(len(is_mask)):
        w = np.flatnonzero(winners[c])
        ranks[c] = np.mean([_avg_rank(r_oos[c], r_oos[c, n]) for n in w])
        oos_perf[c] = float(np.mean(r_oos[c, w]))
    omega = ranks / (configs + 1.0)
    logits = np.log(omega / (1.0 - omega))
    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        oos_rank=omega,
        is_perf=best[:, 0],
        oos_perf=oos_perf,
        blocks=blocks,
        configs=configs,
        metric=metric,
    )


def pbo_returns(returns: np.ndarray, blocks: int | None = None) -> PBOResult:
    """PBO of per-period returns (T periods x N configurations), Sharpe ratio per block set
    (per period, mean / sample std; 0 for a set without spread, e.g. a flat, never-trading run).
    ``blocks`` defaults to :func:`default_blocks` of T."""
    r = _check(returns, "periods")
    t, n = r.shape
    s = default_blocks(t) if blocks is None else blocks
    if blocks is None and s < 2:
        raise DataError(
            f"PBO needs at least {2 * MIN_BLOCK_ROWS} periods ({MIN_BLOCK_ROWS} a block), got {t}"
        )
    _check_blocks(s, t, "periods")
    parts = np.array_split(np.arange(t), s)
    count = np.array([len(p) for p in parts], dtype=np.float64)
    # Column by column, so a configuration's figures never depend on where its column stands
    # (a matrix product may round differently by position): permuting configurations is exact.
    # The spread from returns centred on the column's mean (the variance is the same, the float
    # sums stay small); the mean from the raw sums.
    cols = []
    for j in range(n):
        x = np.ascontiguousarray(r[:, j])
        c = x - x.mean()
        cols.append(
            (
                np.array([x[p].sum() for p in parts]),
                np.array([c[p].sum() for p in parts]),
                np.array([(c[p] ** 2).sum() for p in parts]),
            )
        )

    def sharpe(mask: np.ndarray) -> np.ndarray:
        k = mask @ count
        out = np.empty((len(mask), n))
        for j, (s1, c1, c2) in enumerate(cols):
            mean = (mask @ s1) / k
            sd = np.sqrt(np.maximum(((mask @ c2) - (mask @ c1) ** 2 / k) / (k - 1.0), 0.0))
            # A set with no spread beyond float noise: Sharpe 0 (what a flat equity earns).
            flat = sd <= 1e-12 * np.maximum(np.abs(mean), 1e-12)
            out[:, j] = np.where(flat, 0.0, mean / np.where(flat, 1.0, sd))
        return out

    return _cscv(sharpe, s, n, "sharpe")


def pbo_folds(metrics: np.ndarray) -> PBOResult:
    """PBO of a fold-level metric matrix (F folds x N configurations): each fold is a block and a
    block set's metric is the mean of its folds' values. F must be even and at least 2."""
    m = _check(metrics, "folds")
    f, n = m.shape
    _check_blocks(f, f, "folds")

    def mean(mask: np.ndarray) -> np.ndarray:
        k = mask.sum(axis=1)
        return np.stack([(mask @ np.ascontiguousarray(m[:, j])) / k for j in range(n)], axis=1)

    return _cscv(mean, f, n, "mean")


def describe(res: PBOResult) -> str:
    """One plain line: the PBO, from how many combinations, and what it means."""
    if res.pbo >= 0.5:
        meaning = "the in-sample winner usually does no better than the median out of sample"
    elif res.pbo > 0.1:
        meaning = "the in-sample winner is often no better than the median out of sample"
    else:
        meaning = "the in-sample winner mostly stays above the median out of sample"
    return (
        f"PBO {res.pbo:.2f} from {res.combinations:,} combinations ({res.blocks} blocks, "
        f"{res.configs} configurations): {meaning}"
    )


def logit_bounds(configs: int) -> tuple[float, float]:
    """The smallest and largest logit N configurations allow (IS winner last / first OOS)."""
    lo = math.log(1.0 / configs)
    return lo, -lo
