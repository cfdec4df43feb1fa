"""The replay environment: walks stored history with the same chart, account and fill model as the
backtest and the daemon, for DQN training and greedy evaluation.

A decision at the close of candle t sees frame t and the position features at close t; it fills
at the open of t+1 through :class:`~chartrl.account.base.SimAccount` (the one fill model) and the
reward is that account's ``last_reward``: the log change of equity from close t to close t+1, net
of fees and slippage. Frames are rendered ahead in chunks by :class:`FrameCache`; the replay
memory stores candle indices only and fetches frames from the cache when it trains.

The environment is vectorised: ``num_lanes`` lanes walk consecutive equal slices of the decision
range at once, so acting runs the CNN on a batch and one epoch is one pass over the range.

Episodes end in two ways, kept apart because only one is a real end (Gymnasium's split):
``terminated`` (the account went bankrupt: nothing follows, so no value is bootstrapped) and
``truncated`` (the episode is cut here: the lane's slice ends, or the history breaks; the state
after it still has a value). A break is a decision t whose next candle has no chart, or whose
next candle is not one period later (the stored BTC history misses a few hours here and there):
that transition has no next state to learn from, so it is marked invalid, and the lane restarts
flat at the next decision candle.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import torch

from chartrl.account.base import Candle, SimAccount
from chartrl.account.fills import MarketRules
from chartrl.chart.spec import ChartSpec
from chartrl.market.candles import to_ms

if TYPE_CHECKING:
    from chartrl.train.series import SeriesPart


class FrameSource(Protocol):
    """What the environment needs of :class:`chartrl.chart.tensor_render.TensorRenderer`."""

    valid_indices: np.ndarray
    channels: int

    def render(self, end_indices: np.ndarray) -> Any: ...


class FrameCache:
    """Frames by candle index, rendered ``chunk`` consecutive candles at a time and kept (LRU)
    up to ``max_bytes``. ``render_seconds`` counts the time spent in the renderer."""

    def __init__(self, renderer: FrameSource, chunk: int = 256, max_bytes: int = 3 << 30) -> None:
        self.renderer = renderer
        self.chunk = chunk
        self.max_bytes = max_bytes
        self.valid = np.zeros(
            int(renderer.valid_indices.max()) + 1 if len(renderer.valid_indices) else 0, dtype=bool
        )
        self.valid[renderer.valid_indices] = True
        self._chunks: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self.render_seconds = 0.0
        self.frames_rendered = 0

    def _load(self, cid: int) -> torch.Tensor:
        hit = self._chunks.get(cid)
        if hit is not None:
            self._chunks.move_to_end(cid)
            return hit
        lo, hi = cid * self.chunk, min((cid + 1) * self.chunk, len(self.valid))
        ts = lo + np.flatnonzero(self.valid[lo:hi])
        t0 = time.perf_counter()
        frames = torch.as_tensor(self.renderer.render(ts.astype(np.int64)))
        self.render_seconds += time.perf_counter() - t0
        self.frames_rendered += len(ts)
        block = torch.zeros((self.chunk, *frames.shape[1:]), dtype=frames.dtype)
        block[ts - lo] = frames
        self._chunks[cid] = block
        self._bytes += block.numel() * block.element_size()
        while self._bytes > self.max_bytes and len(self._chunks) > 1:
            _, old = self._chunks.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()
        return block

    def get(self, indices: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames ``(N, C, H, W)`` for candle ``indices`` (any shape is flattened)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (
            idx.min() < 0 or idx.max() >= len(self.valid) or not self.valid[idx].all()
        ):
            bad = idx[(idx < 0) | (idx >= len(self.valid))]
            bad = bad if len(bad) else idx[~self.valid[idx]]
            raise IndexError(f"no complete chart window ends at candle index {int(bad[0])}")
        cids = idx // self.chunk
        out: torch.Tensor | None = None
        for cid in np.unique(cids):
            block = self._load(int(cid))
            if out is None:
                out = torch.empty((len(idx), *block.shape[1:]), dtype=block.dtype)
            sel = np.flatnonzero(cids == cid)
            out[torch.from_numpy(sel)] = block[torch.from_numpy(idx[sel] - cid * self.chunk)]
        if out is None:
            raise IndexError("no frames requested")
        return out


class CandleArrays:
    """The candle frame as numpy columns, and :class:`Candle` rows for the account."""

    def __init__(self, candles: pd.DataFrame) -> None:
        self.ts = np.asarray(to_ms(candles["timestamp"]), dtype=np.int64)
        self.open = candles["open"].to_numpy(np.float64)
        self.high = candles["high"].to_numpy(np.float64)
        self.low = candles["low"].to_numpy(np.float64)
        self.close = candles["close"].to_numpy(np.float64)
        self.volume = candles["volume"].to_numpy(np.float64)
        step = np.diff(self.ts)
        # Candles are missing after t when the next one opens later than the series' period (its
        # median spacing); the last candle has no next one at all.
        self.break_after = (
            np.append(step > np.median(step), True) if len(step) else np.ones(len(self.ts), bool)
        )

    @classmethod
    def concat(cls, parts: list[CandleArrays]) -> CandleArrays:
        """Several series end to end (train/series.py). Each series' last candle keeps its
        ``break_after`` (it has no next candle), so nothing steps from one series into the next."""
        if len(parts) == 1:
            return parts[0]
        out = cls.__new__(cls)
        for name in ("ts", "open", "high", "low", "close", "volume", "break_after"):
            setattr(out, name, np.concatenate([getattr(p, name) for p in parts]))
        return out

    def __len__(self) -> int:
        return len(self.close)

    def candle(self, t: int) -> Candle:
        return Candle(
            int(self.ts[t]), self.open[t], self.high[t], self.low[t], self.close[t], self.volume[t]
        )


def new_account(
    arrays: CandleArrays, t: int, initial_cash: float, rules: MarketRules
) -> SimAccount:
    """A flat account marked at the close of candle ``t`` (so the first reward is close t -> t+1)."""
    account = SimAccount(initial_cash, rules)
    account.last_price = float(arrays.close[t])
    return account


def max_lanes(decisions: int) -> int:
    """The most lanes ``decisions`` decision candles can feed (each lane needs two steps)."""
    return decisions // 2


class ReplayEnv:
    """``num_lanes`` accounts walking equal consecutive slices of ``decisions`` (candle indices
    t, each with t+1 in the frame). A lane's episode is truncated at its slice end and at a break
    in the history, terminated on bankruptcy; within its slice a lane then restarts flat at the
    next decision candle (new episode id). ``segments`` (all lanes' slices, ``(total, per)``)
    replaces the equal split, and ``rules`` may be a function of the candle a lane (re)starts at
    (several series, each with its fill model: train/series.py; crossing from one series into the
    next is always a break, so an account never trades two series)."""

    def __init__(
        self,
        arrays: CandleArrays,
        decisions: np.ndarray,
        num_lanes: int,
        initial_cash: float,
        rules: MarketRules | Callable[[int], MarketRules],
        lane_offset: int = 0,
        total_lanes: int | None = None,
        segments: np.ndarray | None = None,
    ) -> None:
        total = total_lanes or num_lanes
        decisions = np.asarray(decisions, dtype=np.int64)
        if total > max_lanes(len(decisions)):
            raise ValueError(
                f"{len(decisions)} decision candles are too few for {total} lanes (need >= {2 * total})"
            )
        if decisions.max() + 1 >= len(arrays):
            raise ValueError(
                f"decision candle {int(decisions.max())} has no next candle to fill at"
            )
        if segments is None:
            per = len(decisions) // total
            # Drop the remainder at the start so every lane has the same length and epochs end
            # together.
            start = len(decisions) - per * total
            segments = decisions[start:].reshape(total, per)
        lanes = slice(lane_offset, lane_offset + num_lanes)
        self.segments = segments[lanes]
        per = self.segments.shape[1]
        self.rules_at = rules if callable(rules) else lambda t: rules
        self.arrays, self.num_lanes, self.initial_cash = arrays, num_lanes, initial_cash
        self.steps_per_epoch = per - 1
        self._episode_counter = 0
        self.reset()

    def _position(self, lane: int) -> tuple[float, float]:
        t = int(self.segments[lane, self.ptr[lane]])
        return self.accounts[lane].position_features(float(self.arrays.close[t]))

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        self.ptr = np.zeros(self.num_lanes, dtype=np.int64)
        self.accounts = [
            new_account(self.arrays, int(s[0]), self.initial_cash, self.rules_at(int(s[0])))
            for s in self.segments
        ]
        self.episode = np.arange(self.num_lanes, dtype=np.int64) + self._episode_counter
        self._episode_counter += self.num_lanes
        return self.observe()

    def observe(self) -> tuple[np.ndarray, np.ndarray]:
        """Current decision candle per lane and its position features ``(lanes, 2)``."""
        idx = self.segments[np.arange(self.num_lanes), self.ptr]
        pos = np.array([self._position(k) for k in range(self.num_lanes)], dtype=np.float32)
        return idx, pos

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Execute one action per lane; the transition (next state before any restart): reward,
        terminated, truncated, valid (False: the next state is not candle t+1 one period later,
        so the transition must not be learned from), next_idx, next_pos, fills, episode."""
        last = self.segments.shape[1] - 1
        rewards = np.zeros(self.num_lanes, dtype=np.float32)
        terminated = np.zeros(self.num_lanes, dtype=bool)
        truncated = np.zeros(self.num_lanes, dtype=bool)
        valid = np.zeros(self.num_lanes, dtype=bool)
        fills = np.zeros(self.num_lanes, dtype=np.int64)
        episode = self.episode.copy()
        for k in range(self.num_lanes):
            t = int(self.segments[k, self.ptr[k]])
            account = self.accounts[k]
            fills[k] = account.execute(int(actions[k]), self.arrays.candle(t + 1)) is not None
            rewards[k] = account.last_reward
            self.ptr[k] += 1
            valid[k] = (
                int(self.segments[k, self.ptr[k]]) == t + 1 and not self.arrays.break_after[t]
            )
            terminated[k] = account.bankrupt
            truncated[k] = not terminated[k] and (self.ptr[k] >= last or not valid[k])
        next_idx, next_pos = self.observe()
        # restart flat, new episode
        for k in np.flatnonzero((terminated | truncated) & (self.ptr < last)):
            t = int(self.segments[k, self.ptr[k]])
            self.accounts[k] = new_account(self.arrays, t, self.initial_cash, self.rules_at(t))
            self.episode[k] = self._episode_counter
            self._episode_counter += 1
        return {
            "reward": rewards,
            "terminated": terminated,
            "truncated": truncated,
            "valid": valid,
            "next_idx": next_idx,
            "next_pos": next_pos,
            "fills": fills,
            "episode": episode,
        }


@dataclass
class TrainData:
    """One series (or several end to end, ``series``) prepared for training: frames, candles,
    and the date split."""

    candles: pd.DataFrame
    spec: ChartSpec
    timeframe: str
    arrays: CandleArrays
    frames: FrameCache
    train: np.ndarray
    """Decision candles of the training part (each fills at t+1, still a training candle)."""
    validation: np.ndarray
    """Decision candles of the validation part, purged so no chart reaches into training candles."""
    validation_start: int
    """First validation candle (of the first series; each one's is in ``series``)."""
    series: tuple[SeriesPart, ...] = ()
    """The series laid end to end in the index space (train/series.py); one for a single series."""


def prepare_data(
    candles: pd.DataFrame,
    spec: ChartSpec,
    timeframe: str,
    validation_fraction: float = 0.15,
    cache_mb: int = 3072,
    name: str = "",
) -> TrainData:
    """Render setup and the date split: the last ``validation_fraction`` of candles validate,
    minus one chart window (purge) so no validation chart contains a training candle."""
    from chartrl.train.series import prepare_series

    return prepare_series([(name, candles)], spec, timeframe, validation_fraction, cache_mb)
