"""The oracles: the fee-aware optimal long/flat path (dynamic programming over the candles) and the
article's window-extrema labeller (buy at a window minimum, sell at a maximum, hold otherwise).

Both look ahead, so they are training targets and an upper-bound baseline only. They must never
reach a model's input: nothing under chart/ or the policies imports this module.
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


def optimal_values(
    open_: np.ndarray,
    close: np.ndarray,
    fee: float = 0.001,
    slippage_bps: float = 5.0,
    trade_penalty: float = 0.0,
    gamma: float = 1.0,
) -> np.ndarray:
    """Hindsight action values of a long/flat account under the backtest's fill model.

    Returns float64 ``q[t, p, a]``: the highest log equity gain reachable from the close of candle t
    in position p (0 flat, 1 long) when action a (0 hold, 1 buy, 2 sell) is decided at that close
    and fills at the open of t+1, paying ``fee`` and ``slippage_bps`` on both sides and
    ``trade_penalty`` (log-return units) per entry, i.e. per round trip. A buy while long or a sell
    while flat does nothing, as in the fill model. No decision at the last candle (no next open), so
    its values are the gap-free zero. ``gamma`` < 1 discounts each candle's log return as the DQN
    stage does (``q * reward_scale`` is then the hindsight Q* of the DQN's rewards, the penalty
    aside); the default 1 is the final log equity.
    """
    o = np.asarray(open_, dtype=np.float64)
    c = np.asarray(close, dtype=np.float64)
    n = len(c)
    if len(o) != n:
        raise ValueError(f"open and close differ in length: {len(o)} != {n}")
    slip = slippage_bps / 1e4
    buy_cost = np.log((1 + slip) * (1 + fee)) + trade_penalty  # log equity lost entering
    sell_cost = -np.log((1 - slip) * (1 - fee))  # log equity lost leaving
    q = np.zeros((n, 2, 3))
    v = np.zeros(2)  # best value at the close of t+1, per position held after its decision
    for t in range(n - 2, -1, -1):
        gap = np.log(o[t + 1] / c[t])  # close t -> open t+1: earned by the position held at t
        intra = np.log(c[t + 1] / o[t + 1])  # open t+1 -> close t+1: by the position after the fill
        stay_flat = gamma * v[0]
        go_long = -buy_cost + intra + gamma * v[1]
        stay_long = gap + intra + gamma * v[1]
        go_flat = gap - sell_cost + gamma * v[0]
        q[t, 0] = (stay_flat, go_long, stay_flat)
        q[t, 1] = (stay_long, stay_long, go_flat)
        v = np.array([max(stay_flat, go_long), max(stay_long, go_flat)])
    return q


def optimal_actions(q: np.ndarray) -> np.ndarray:
    """int64 ``[t, p]``: the optimal action from flat (hold or buy) and from long (hold or sell);
    ties hold, so the oracle never trades for nothing."""
    acts = np.full(q.shape[:2], int(Action.HOLD), dtype=np.int64)
    acts[:, 0][q[:, 0, 1] > q[:, 0, 0]] = int(Action.BUY)
    acts[:, 1][q[:, 1, 2] > q[:, 1, 0]] = int(Action.SELL)
    return acts


def oracle_path(actions: np.ndarray, start_long: bool = False) -> np.ndarray:
    """int64 position (0 flat, 1 long) held after each decision when the optimal ``actions[t, p]``
    are followed from ``start_long``: the oracle's own trajectory, as the backtest replays it."""
    pos = np.empty(len(actions), dtype=np.int64)
    p = int(start_long)
    for t in range(len(actions)):
        a = actions[t, p]
        p = 1 if a == int(Action.BUY) else 0 if a == int(Action.SELL) else p
        pos[t] = p
    return pos


def path_stats(open_: np.ndarray, close: np.ndarray, pos: np.ndarray, hours: float = 1.0) -> dict:
    """Round trips per week, exposure and trade count of a position path (``pos[t]`` held from the
    open of t+1), as the benchmark and the docs report the oracle's trade rate."""
    entries = int(np.count_nonzero(np.diff(np.r_[0, pos]) == 1))
    weeks = max(len(pos) * hours / (24 * 7), 1e-9)
    return {
        "round_trips": entries,
        "round_trips_per_week": entries / weeks,
        "exposure": float(np.mean(pos)) if len(pos) else 0.0,
    }
