"""Training on several series at once (``chartrl train --series A,B``).

The series are laid end to end in one candle index space: series k owns the global indices
``[start_k, stop_k)``. Every index still belongs to exactly one series, and each series keeps its
own renderer, so a chart window never holds candles of two series (``ConcatRenderer``); the last
candle of a series is a break in the history (``CandleArrays.concat``), so no transition, lane
episode, replayed sequence or imitation window runs from one series into the next. The trainer
itself sees one :class:`~chartrl.train.env.TrainData` whose ``series`` lists the parts.

Each series is split by date on its own (the last ``validation_fraction`` of its candles, purged
by one chart window), is validated on its own, and fills under its own market's rules, in its own
quote currency: returns are what is learnt and compared, so a BTC-quoted and a USDT-quoted series
mix without any conversion.

How much each series weighs: series k gets a share of the lanes (at least one each, every lane
inside one series) and of the imitation sequences in proportion to its training candles, or to
``weights`` (``--series-weights``) w_k / sum(w); the replay memory holds what the lanes collect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from chartrl.account.fills import MarketRules
from chartrl.chart.spec import ChartSpec
from chartrl.errors import DataError, UsageError
from chartrl.symbols import series_slug as slug


@dataclass(frozen=True)
class SeriesPart:
    """One training series inside a :class:`~chartrl.train.env.TrainData`."""

    name: str
    """``exchange:BASE/QUOTE:timeframe`` ('' for a single unnamed series)."""
    start: int
    """First global candle index of the series."""
    stop: int
    """One past its last global candle index."""
    train: np.ndarray
    """Its training decision candles (global indices)."""
    validation: np.ndarray
    """Its validation decision candles (global indices), purged by one chart window."""
    validation_start: int
    """Its first validation candle (global index); its oracle sees candles before it only."""
    rules: MarketRules | None = None
    """Its fill model (None: the one the trainer is given)."""
    weight: float | None = None
    """Its share of lanes and imitation sequences (None: by its size)."""
    info: dict[str, Any] = field(default_factory=dict)
    """What model.json records of it (exchange, symbol, timeframe, range, candles, ...)."""


class ConcatRenderer:
    """Several series' renderers as one, over the global index space: a chart ending at global
    index g is drawn by the renderer of the series that owns g, from that series' candles only."""

    def __init__(self, renderers: Sequence[Any], starts: Sequence[int]) -> None:
        self.renderers, self.starts = list(renderers), np.asarray(starts, dtype=np.int64)
        self.channels = self.renderers[0].channels
        self.valid_indices = np.concatenate(
            [r.valid_indices + s for r, s in zip(self.renderers, self.starts, strict=True)]
        ).astype(np.int64)

    def render(self, end_indices: np.ndarray) -> torch.Tensor:
        idx = np.asarray(end_indices, dtype=np.int64)
        owner = np.searchsorted(self.starts, idx, side="right") - 1
        out: torch.Tensor | None = None
        for k in np.unique(owner):
            sel = np.flatnonzero(owner == k)
            frames = torch.as_tensor(self.renderers[k].render(idx[sel] - self.starts[k]))
            if out is None:
                out = torch.empty((len(idx), *frames.shape[1:]), dtype=frames.dtype)
            out[torch.from_numpy(sel)] = frames
        if out is None:
            raise IndexError("no frames requested")
        return out


def check_timeframes(names: Sequence[str], timeframes: Sequence[str], model_timeframe: str) -> None:
    """Every series must have the model's timeframe: a chart of 1h candles and one of 1d candles
    are different pictures of time. Refused naming the series that differ."""
    odd = [f"{n} ({tf})" for n, tf in zip(names, timeframes, strict=True) if tf != model_timeframe]
    if odd:
        raise UsageError(
            f"--series mixes timeframes: the model's is {model_timeframe} but "
            f"{', '.join(odd)} {'is' if len(odd) == 1 else 'are'} not; train one model per timeframe"
        )


def allocate_lanes(weights: np.ndarray, lanes: int) -> np.ndarray:
    """Lanes per series in proportion to ``weights``, at least one each (largest remainder)."""
    k = len(weights)
    if lanes < k:
        raise UsageError(
            f"--num-envs {lanes}: {k} weighted series need at least one lane each; use --num-envs {k} or more"
        )
    quota = np.asarray(weights, dtype=np.float64) / float(np.sum(weights)) * lanes
    out = np.maximum(np.floor(quota).astype(np.int64), 1)
    while out.sum() > lanes:  # the minimum of one lane was taken from the most over-served
        over = np.where(out > 1, out - quota, -np.inf)
        out[int(np.argmax(over))] -= 1
    while out.sum() < lanes:  # the rest by largest remainder
        out[int(np.argmax(quota - out))] += 1
    return out


def lane_segments(parts: Sequence[SeriesPart], total_lanes: int) -> np.ndarray:
    """``(total_lanes, per)`` decision slices over several series: series k gets
    ``allocate_lanes`` lanes by its share (``series_shares``: weight, else size), each walking
    ``per`` consecutive training decisions of that series only, their starts spread evenly over
    it. ``per`` is what equal slices of all decisions would give (capped by the smallest series),
    so an epoch makes as many steps as one series of that size would. A series with more lanes
    than its size fills overlaps them, one with fewer leaves short stretches unvisited. Every lane
    staying in one series keeps the shares true also when ``max_steps_per_epoch`` cuts epochs
    short (a nightly fine-tune): lanes walking all series end to end would then see the first."""
    sizes = np.array([len(p.train) for p in parts])
    lanes = allocate_lanes(series_shares(parts), total_lanes)
    per = min(int(sizes.sum()) // total_lanes, int(sizes.min()))
    if per < 2:
        raise UsageError(
            f"--num-envs {total_lanes}: too few training candles per lane; use fewer lanes"
        )
    rows = []
    for p, n_lanes in zip(parts, lanes, strict=True):
        starts = np.linspace(0, len(p.train) - per, int(n_lanes)).round().astype(np.int64)
        rows += [p.train[s : s + per] for s in starts]
    return np.stack(rows)


def series_shares(parts: Sequence[SeriesPart]) -> np.ndarray:
    """Each series' share of the lanes and of the imitation sequences: the weights, else the
    sizes (training decisions)."""
    w = np.array([len(p.train) if p.weight is None else p.weight for p in parts], dtype=np.float64)
    return w / w.sum()


def series_of(parts: Sequence[SeriesPart], n: int) -> np.ndarray:
    """For each of the ``n`` global candle indices, the position of its series in ``parts``."""
    owner = np.zeros(n, dtype=np.int64)
    for k, p in enumerate(parts):
        owner[p.start : p.stop] = k
    return owner


def split_part(
    name: str,
    valid: np.ndarray,
    start: int,
    n: int,
    window: int,
    validation_fraction: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The date split of one series of ``n`` candles starting at global ``start`` whose charts
    exist at local indices ``valid``: (train, validation, validation_start), global indices."""
    valid = valid[valid < n - 1]
    val_start = int(round(n * (1 - validation_fraction))) if validation_fraction > 0 else n
    train = valid[valid + 1 < val_start]
    validation = valid[valid >= val_start + window - 1]
    where = f" of {name}" if name else ""
    if len(train) < 64:
        raise DataError(
            f"only {len(train)} training candles with a complete {window}-candle chart out of {n}{where}; "
            f"load a longer range (--from/--until) or use a smaller chart.window"
        )
    if validation_fraction > 0 and len(validation) < 16:
        raise DataError(
            f"only {len(validation)} validation candles{where} after purging one chart window ({window}) "
            f"from the last {validation_fraction:.0%} of {n} candles; load a longer range or lower the "
            "validation fraction"
        )
    return train + start, validation + start, val_start + start


def prepare_series(
    series: Sequence[tuple[str, pd.DataFrame]],
    spec: ChartSpec,
    timeframe: str,
    validation_fraction: float = 0.15,
    cache_mb: int = 3072,
    rules: Sequence[MarketRules | None] | None = None,
    weights: Sequence[float] | None = None,
    split: Callable[[int, str, np.ndarray, int, int], tuple[np.ndarray, np.ndarray, int]]
    | None = None,
) -> Any:
    """A :class:`~chartrl.train.env.TrainData` over several ``(name, candles)`` series of one
    ``timeframe`` (see the module docstring); ``rules`` and ``weights`` per series, optional.
    ``split(k, name, valid, start, n)`` replaces ``split_part``'s date split by
    ``validation_fraction`` (a sweep's folds: experiments/trainable.py)."""
    from chartrl.chart.tensor_render import TensorRenderer
    from chartrl.train.env import CandleArrays, FrameCache, TrainData

    if weights is not None and (len(weights) != len(series) or any(not w > 0 for w in weights)):
        raise UsageError(
            f"--series-weights: give one positive weight per series ({len(series)}), got {list(weights)}"
        )
    renderers, parts, starts, offset = [], [], [], 0
    for k, (name, candles) in enumerate(series):
        r = TensorRenderer(candles, spec, "cpu")
        n = len(candles)
        train, validation, val_start = (
            split(k, name, np.asarray(r.valid_indices), offset, n)
            if split is not None
            else split_part(name, r.valid_indices, offset, n, spec.window, validation_fraction)
        )
        ts = candles["timestamp"]
        info = {
            "from": ts.iloc[0].isoformat(),
            "until": ts.iloc[-1].isoformat(),
            "candles": n,
            "validation_from": ts.iloc[min(val_start - offset, n - 1)].isoformat()
            if len(validation)
            else None,
        }
        parts.append(
            SeriesPart(
                name,
                offset,
                offset + n,
                train,
                validation,
                val_start,
                rules[k] if rules is not None else None,
                float(weights[k]) if weights is not None else None,
                info,
            )
        )
        renderers.append(r)
        starts.append(offset)
        offset += n
    frames = FrameCache(
        renderers[0] if len(renderers) == 1 else ConcatRenderer(renderers, starts),
        max_bytes=cache_mb << 20,
    )
    return TrainData(
        pd.concat([c for _, c in series], ignore_index=True) if len(series) > 1 else series[0][1],
        spec,
        timeframe,
        CandleArrays.concat([CandleArrays(c) for _, c in series]),
        frames,
        np.concatenate([p.train for p in parts]),
        np.concatenate([p.validation for p in parts]),
        parts[0].validation_start,
        tuple(parts),
    )


def lane_layout(
    data: Any, total_lanes: int, rules: MarketRules
) -> tuple[np.ndarray | None, MarketRules | Any]:
    """What :class:`~chartrl.train.env.ReplayEnv` needs beyond ``data.train`` for several series:
    the lanes' slices (``lane_segments``; None for one series: equal slices of it) and the fill
    model as a function of the candle a lane starts at."""
    parts = data.series
    if len(parts) <= 1:
        return None, rules
    segments = lane_segments(parts, total_lanes)
    owner = series_of(parts, len(data.arrays))
    by_series = [p.rules or rules for p in parts]
    return segments, lambda t: by_series[owner[t]]


def series_visits(data: Any, segments: np.ndarray, steps: int) -> dict[str, int]:
    """Decisions the lanes made in each series over an epoch of ``steps`` steps (history.csv
    ``transitions@<slug>``; nothing for a single series)."""
    if len(data.series) <= 1:
        return {}
    owner = series_of(data.series, len(data.arrays))
    counts = np.bincount(owner[segments[:, :steps]].ravel(), minlength=len(data.series))
    return {f"transitions@{slug(p.name)}": int(c) for p, c in zip(data.series, counts, strict=True)}
