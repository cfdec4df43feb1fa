"""The oracle labeller: buy at a window minimum, sell at a window maximum, hold otherwise.

It looks ahead (the window is centred on t), so it is a training label and an upper-bound baseline
only. It must never reach a model's input: nothing under chart/ or the policies imports it.
"""

from __future__ import annotations

import numpy as np

from chartrl.actions import Action


def oracle_labels(close: np.ndarray, window: int = 24) -> np.ndarray:
    """int64 labels per candle: SELL where close[t] is the max of close[t-window..t+window],
    BUY where it is the min, HOLD otherwise (edges use the part of the window that exists)."""
    if window < 1:
        raise ValueError(f"oracle window must be >= 1, got {window}")
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    labels = np.full(n, int(Action.HOLD), dtype=np.int64)
    if n == 0:
        return labels
    pad_hi = np.pad(close, window, mode="constant", constant_values=-np.inf)
    pad_lo = np.pad(close, window, mode="constant", constant_values=np.inf)
    win = np.lib.stride_tricks.sliding_window_view
    hi = win(pad_hi, 2 * window + 1).max(axis=1)
    lo = win(pad_lo, 2 * window + 1).min(axis=1)
    labels[close >= hi] = int(Action.SELL)
    labels[close <= lo] = int(Action.BUY)
    return labels
