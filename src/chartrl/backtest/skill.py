"""Skill test: the model's return against random policies with its own trips and exposure.

A policy that only sits in the market longer than its rivals earns the drift, not skill. So the
null here keeps everything but the timing: each of ``sims`` random policies makes the same round
trips (the same durations, so the same number of trips and the same time in the market), placed at
random over the same candles, and pays the same costs under the same fill model (fill at the open,
slippage and taker fee on both sides; a trip still open at the end is marked at the last close,
without exit costs, as the equity curve marks it).

The model's own return is recomputed with that same formula from its fills, so both sides are
priced alike (full-budget sizing; amount rounding and exchange minimums are ignored on both).
p-value = (1 + #{random >= model}) / (1 + sims), the usual add-one Monte Carlo p-value: it is never
0 and a tie counts against the model. Percentile = share of random returns below the model, ties
counted half. Placement: the trip order is a random permutation and the free candles between
trips (at least one, since a sell and the next buy cannot share a candle) are cut at ``m`` points
drawn uniformly. Seeded: the same inputs and seed give the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from chartrl.account.fills import Fill
from chartrl.backtest.metrics import pair_fills

SIMS = 1000
SEED = 0
CHUNK = 1 << 15
"""Trips x simulations per vectorised chunk."""


def trip_blocks(fills: Sequence[Fill], fill_index: np.ndarray, n_fills: int) -> np.ndarray:
    """(entry, exit) fill indices of each trip (``pair_fills``); an open trip at the end exits at
    ``n_fills + 1`` (the mark at the last close). Fill indices run 1..n_fills (candle k's open
    fills index k)."""
    idx = np.asarray(fill_index, dtype=np.int64)
    if len(idx) != len(fills):
        raise ValueError(f"{len(fills)} fills but {len(idx)} fill indices")
    blocks = [(idx[b], n_fills + 1 if s is None else idx[s]) for b, s in pair_fills(fills)]
    return np.asarray(blocks, dtype=np.int64).reshape(-1, 2)


def _log_prices(
    opens: np.ndarray, last_close: float, fee: float, slip: float
) -> tuple[np.ndarray, np.ndarray]:
    """Log entry and exit price with costs, indexed by fill index (0 unused, n+1 the final mark)."""
    lo = np.log(np.asarray(opens, dtype=np.float64))
    entry = np.concatenate([[np.nan], lo[1:] + math.log((1 + slip) * (1 + fee)), [np.nan]])
    exit_ = np.concatenate(
        [[np.nan], lo[1:] + math.log((1 - slip) * (1 - fee)), [math.log(last_close)]]
    )
    return entry, exit_


def _null(
    opens: np.ndarray,
    last_close: float,
    blocks: np.ndarray,
    fee: float,
    slippage_bps: float,
    sims: int,
    seed: int,
) -> tuple[float, np.ndarray | None]:
    """The model's log return and the ``sims`` random placements' (None without a trip)."""
    n = len(opens) - 1
    entry_lp, exit_lp = _log_prices(opens, last_close, fee, slippage_bps / 1e4)
    blocks = np.asarray(blocks, dtype=np.int64).reshape(-1, 2)
    m = len(blocks)
    model = float(np.sum(exit_lp[blocks[:, 1]] - entry_lp[blocks[:, 0]])) if m else 0.0
    if m == 0:
        return model, None
    dur = blocks[:, 1] - blocks[:, 0]
    slack = n - int(dur.sum()) - (m - 1)
    if slack < 0:
        raise ValueError("trips overlap or exceed the candles; cannot place them at random")
    rng = np.random.default_rng(seed)
    rand = np.empty(sims)
    step = max(1, CHUNK // m)  # simulations per chunk: the working arrays stay in the CPU cache
    for lo in range(0, sims, step):
        k = min(step, sims - lo)
        d = rng.permuted(np.broadcast_to(dur, (k, m)), axis=1)
        # m sorted uniform cuts in [0, slack] without a sort: the order statistics of m uniforms
        # are the normalised cumulative sums of m + 1 exponential spacings (floor keeps the order).
        u = np.cumsum(rng.standard_exponential(size=(k, m + 1)), axis=1)
        cuts = (u[:, :m] * ((slack + 1) / u[:, m:])).astype(np.int64)
        starts = 1 + cuts + (np.cumsum(d, axis=1) - d) + np.arange(m)  # + earlier trips' candles
        rand[lo : lo + k] = np.sum(exit_lp[starts + d] - entry_lp[starts], axis=1)
    return model, rand


def _verdict(model: float, rand: np.ndarray | None, sims: int, seed: int) -> dict:
    out = {"skill_sims": sims, "skill_seed": seed, "skill_log_return": model}
    if rand is None:
        # No trip: every random policy is the same empty policy; nothing to tell apart.
        return {**out, "skill_p_value": 1.0, "skill_percentile": 50.0, "skill_null_mean": 0.0}
    # A float tie (same trips, same places) must count as a tie, not as luck either way.
    tol = 1e-12 * max(1.0, abs(model))
    above = int(np.sum(rand >= model - tol))
    below = int(np.sum(rand < model - tol))
    ties = sims - below - int(np.sum(rand > model + tol))
    return {
        **out,
        "skill_p_value": (1 + above) / (1 + sims),
        "skill_percentile": 100.0 * (below + 0.5 * ties) / sims,
        "skill_null_mean": float(np.mean(rand)),
    }


def skill_test(
    opens: np.ndarray,
    last_close: float,
    blocks: np.ndarray,
    fee: float,
    slippage_bps: float,
    sims: int = SIMS,
    seed: int = SEED,
) -> dict:
    """p-value and percentile of the trips ``blocks`` against ``sims`` random placements of them.

    ``opens[k]`` is the open that fill index k fills at (``opens[0]``, the first decision candle's
    open, is never traded); ``last_close`` marks a trip open at the end.
    """
    model, rand = _null(opens, last_close, blocks, fee, slippage_bps, sims, seed)
    return _verdict(model, rand, sims, seed)


def pooled_skill_test(
    runs: Sequence[tuple[np.ndarray, float, np.ndarray, float, float]],
    sims: int = SIMS,
    seed: int = SEED,
) -> dict:
    """One skill test over several series at once: ``runs`` holds each series' ``skill_test``
    arguments (opens, last_close, blocks, fee, slippage_bps). A random policy places each series'
    trips at random inside that series (series k seeded ``seed + k``); the statistic is the sum of
    the log returns over the series, the model's against the random ones'."""
    total, null = 0.0, None
    for k, args in enumerate(runs):
        model, rand = _null(*args, sims, seed + k)
        total += model
        if rand is not None:
            null = rand if null is None else null + rand
    return _verdict(total, null, sims, seed)


def result_skill(result, sims: int = SIMS, seed: int = SEED) -> dict:
    """``skill_test`` of a :class:`chartrl.backtest.runner.BacktestResult`, priced under the fill
    model it ran under (``result.rules``)."""
    opens = result.candles["open"].to_numpy(np.float64)
    last_close = float(result.candles["close"].iloc[-1])
    blocks = trip_blocks(result.fills, result.fill_index, len(opens) - 1)
    fee, slippage_bps = result.rules.fee, result.rules.slippage_bps
    return skill_test(opens, last_close, blocks, fee, slippage_bps, sims, seed)
