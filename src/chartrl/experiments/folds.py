"""The walk-forward folds of a sweep: each a training, a validation and a test range, purged.

Over n candles, K folds, purge gap g = chart window + oracle window, L = (n - 2Kg) // (2K + 3):

    fold 0: | train (T0 >= 3L)        |g| val L |g| test L |
    fold 1: | train (fold 0's whole block included)   ... |g| val L |g| test L |
    ...                                     each fold's block is g + L + g + L candles long,
                                            and the last test range ends at the last candle

- Training is anchored: it starts at the first candle and, for fold i > 0, ends where fold i-1's
  test range ends, so every fold trains on all that came before it.
- Validation picks the checkpoint (the trainer's ``best/``) and is all a search ever scores. No
  validation range overlaps any fold's test range, so no choice (checkpoint or hyperparameters)
  ever saw a test candle. (backtest/walkforward.py's layout puts fold i+1's validation over fold
  i's test: fine for one fixed model, not for a search across folds.)
- The gap purges: the chart window of the first validation (and test) decision lies entirely
  after the range before it, and the oracle's look-ahead at the end of the training labels (its
  window) cannot reach the validation candles. The trainer computes the oracle on training
  candles only, so the gap is a second guard, not the only one.

Ranges are inclusive candle indices (:class:`chartrl.backtest.walkforward.Fold`). A decision at
candle t fills at t+1, so a range's decisions are its candles but the last.
"""

from __future__ import annotations

from chartrl.backtest.walkforward import Fold
from chartrl.errors import UsageError

MIN_TRAIN = 64
"""Training decisions a fold needs at least (the trainer's own floor)."""
MIN_RANGE = 32
"""Candles a validation or test range needs at least."""


def purge_gap(window: int, oracle_window: int) -> int:
    """Candles left out between two ranges: one chart window plus the oracle window."""
    return window + oracle_window


def sweep_folds(n: int, k: int, gap: int) -> list[Fold]:
    """K folds over ``n`` candles (see the module docstring); raises UsageError when the data
    cannot feed them, saying what would."""
    if k < 1:
        raise UsageError(f"--folds must be >= 1, got {k}")
    length = (n - 2 * k * gap) // (2 * k + 3)
    if length < MIN_RANGE:
        need = 2 * k * gap + (2 * k + 3) * MIN_RANGE
        raise UsageError(
            f"{n} candles are too few for {k} folds with a {gap}-candle purge gap (need at least "
            f"{need}); use fewer --folds, a longer --from/--until range or a smaller chart window"
        )
    block = 2 * length + 2 * gap
    first_val = n - k * block + gap  # the training part of fold 0 absorbs the remainder
    folds = []
    for i in range(k):
        v0 = first_val + i * block
        t0 = v0 + length + gap
        folds.append(Fold(i, (0, v0 - gap - 1), (v0, v0 + length - 1), (t0, t0 + length - 1)))
    return folds


def check_folds(folds: list[Fold], first_chart: int, num_envs: int) -> None:
    """Refuse folds whose first training range, after the chart warm-up, is too short to train
    (or to feed ``num_envs`` lanes) on."""
    train = folds[0].train[1] - max(
        first_chart, folds[0].train[0]
    )  # decisions: candles but the last
    need = max(MIN_TRAIN, 2 * num_envs)
    if train < need:
        raise UsageError(
            f"fold 0 trains on {max(train, 0)} decisions after the {first_chart}-candle chart warm-up, "
            f"fewer than {need} (lanes {num_envs}); use fewer --folds or a longer --from/--until range"
        )
