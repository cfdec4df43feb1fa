"""Greedy evaluation of a policy over a stretch of history (validation during training).

The CNN runs batched over every frame of the stretch at once (frames never depend on actions);
only the head steps candle by candle, because the position features depend on earlier actions.
The hidden state is carried across the whole stretch, as the daemon carries it across ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from chartrl.account.fills import Fill, MarketRules
from chartrl.backtest.metrics import compute_metrics
from chartrl.backtest.skill import pooled_skill_test, skill_test, trip_blocks
from chartrl.strategies.base import Policy, greedy
from chartrl.timeframe import periods_per_year
from chartrl.train.env import CandleArrays, FrameCache, TrainData, new_account
from chartrl.train.series import slug

VALIDATION_METRICS = (
    "total_return",
    "sharpe",
    "max_drawdown",
    "trades",
    "trades_per_week",
    "exposure",
    "turnover",
    "fees_paid",
    "skill_p_value",
    "skill_percentile",
)
"""The validation figures of training (history.csv ``val_*``, model.json, compare): the backtest's
(``compute_metrics``, ``skill_test``), plus round trips per week. Return alone mostly measures time
in the market, so exposure, turnover, fees and the skill test stand beside it."""


@dataclass
class GreedyRun:
    """One greedy run, laid out as :class:`chartrl.backtest.runner.BacktestResult` lays out a replay."""

    actions: np.ndarray
    equity: np.ndarray
    """The starting cash at the close of the first decision candle, then equity after every step (N+1)."""
    position: np.ndarray
    """Base amount held at each equity point."""
    fills: list[Fill]
    fill_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """For each fill, the equity point (1..N) whose candle's open filled it."""
    opens: np.ndarray | None = None
    """Open of candle first + k for k = 0..N (``opens[k]`` is what fill index k filled at)."""
    last_close: float = math.nan
    """Close of the last candle (the final mark)."""
    rules: MarketRules | None = None
    """The fill model; without it and ``opens`` there is no skill test (its figures are None)."""


@torch.no_grad()
def greedy_run(
    policy: Policy,
    frames: FrameCache,
    arrays: CandleArrays,
    decisions: np.ndarray,
    initial_cash: float,
    rules: MarketRules,
    device: torch.device | str = "cpu",
    feature_batch: int = 256,
) -> GreedyRun:
    """Act greedily at every candle of ``decisions`` (each fills at the next candle's open)."""
    was_training = policy.training
    policy.eval()
    try:
        feats = torch.cat(
            [
                policy.features(frames.get(decisions[i : i + feature_batch]).to(device)).float()
                for i in range(0, len(decisions), feature_batch)
            ]
        )
        account = new_account(arrays, int(decisions[0]), initial_cash, rules)
        hidden = policy.initial_hidden(1, device)
        actions = np.zeros(len(decisions), np.int64)
        equity = np.full(len(decisions) + 1, float(initial_cash))
        position = np.zeros(len(decisions) + 1)
        fill_index: list[int] = []
        for i, t in enumerate(decisions):
            pos = torch.tensor(
                [account.position_features(float(arrays.close[t]))],
                dtype=torch.float32,
                device=device,
            )
            q, hidden = policy.head(feats[i : i + 1], pos, hidden)
            a = int(greedy(q, pos).item())
            if account.execute(a, arrays.candle(int(t) + 1)) is not None:
                fill_index.append(i + 1)
            actions[i], equity[i + 1], position[i + 1] = a, account.equity(), account.position
    finally:
        policy.train(was_training)
    first, last = int(decisions[0]), int(decisions[-1]) + 1
    return GreedyRun(
        actions,
        equity,
        position,
        list(account.book.fills),
        np.asarray(fill_index, dtype=np.int64),
        arrays.open[first : last + 1].copy(),
        float(arrays.close[last]),
        rules,
    )


def run_metrics(run: GreedyRun, timeframe: str) -> dict[str, float | None]:
    """``VALIDATION_METRICS`` of the run by the backtest's own definitions (``compute_metrics``):
    Sharpe of simple per-candle returns annualised for ``timeframe`` and null when equity is flat,
    trades = closed round trips; the skill test (``skill_test``) under the run's fill model."""
    m = compute_metrics(run.equity, run.position, run.fills, periods_per_year(timeframe))
    if run.opens is not None and run.rules is not None:
        blocks = trip_blocks(run.fills, run.fill_index, len(run.opens) - 1)
        r = run.rules
        m.update(skill_test(run.opens, run.last_close, blocks, r.fee, r.slippage_bps))
    return {k: m.get(k) for k in VALIDATION_METRICS}


def pooled_metrics(runs: list[GreedyRun], per_series: list[dict], timeframe: str) -> dict:
    """``VALIDATION_METRICS`` of several series' runs together. The equity curves are chained, each
    starting where the previous ended, so returns, Sharpe and drawdown are those of the series'
    per-candle returns one after the other (returns carry no currency: a BTC-quoted and a
    USDT-quoted series pool without conversion); exposure over all their candles; trades summed;
    fees and turnover None (they are in different quote currencies); the skill test pooled
    (``pooled_skill_test``: each series' trips placed at random inside it)."""
    equity, position = [], []
    for k, run in enumerate(runs):
        scale = equity[-1][-1] / run.equity[0] if k else 1.0 / run.equity[0]
        equity.append(run.equity[1 if k else 0 :] * scale)
        position.append(run.position[1 if k else 0 :])
    ppy = periods_per_year(timeframe)
    m = compute_metrics(np.concatenate(equity), np.concatenate(position), [], ppy)
    m["trades"] = int(sum(s["trades"] or 0 for s in per_series))
    years = (m["candles"] - 1) / ppy
    m["trades_per_week"] = m["trades"] / (years * 365.0 / 7.0) if years > 0 else 0.0
    m["fees_paid"] = m["turnover"] = None
    skill = [
        (
            r.opens,
            r.last_close,
            trip_blocks(r.fills, r.fill_index, len(r.opens) - 1),
            r.rules.fee,
            r.rules.slippage_bps,
        )
        for r in runs
        if r.opens is not None and r.rules is not None
    ]
    if len(skill) == len(runs):
        m.update(pooled_skill_test(skill))
    return {k: m.get(k) for k in VALIDATION_METRICS}


def validate(
    policy: Policy, data: TrainData, rules: MarketRules, cash: float, device: torch.device
) -> tuple[dict[str, float | None], np.ndarray | None]:
    """Validation metrics and the greedy actions (None without a validation part). With several
    series, each is run on its own (own account, own fill model, hidden state from zero) and the
    metrics are the pooled ones (``pooled_metrics``) plus ``<metric>@<series slug>`` per series."""
    if len(data.validation) == 0:
        return {}, None
    parts = [p for p in data.series if len(p.validation)]
    if len(data.series) <= 1:
        run = greedy_run(policy, data.frames, data.arrays, data.validation, cash, rules, device)
        return run_metrics(run, data.timeframe), run.actions
    runs = [
        greedy_run(policy, data.frames, data.arrays, p.validation, cash, p.rules or rules, device)
        for p in parts
    ]
    each = [run_metrics(run, data.timeframe) for run in runs]
    out = pooled_metrics(runs, each, data.timeframe)
    for p, m in zip(parts, each, strict=True):
        out.update({f"{k}@{slug(p.name)}": v for k, v in m.items()})
    return out, np.concatenate([run.actions for run in runs])
