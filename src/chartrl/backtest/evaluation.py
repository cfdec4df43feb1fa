"""Greedy evaluation of a policy over a stretch of history (validation during training).

The CNN runs batched over every frame of the stretch at once (frames never depend on actions);
only the head steps candle by candle, because the position features depend on earlier actions.
The hidden state is carried across the whole stretch, as the daemon carries it across ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from chartrl.account.fills import MarketRules
from chartrl.backtest.env import CandleArrays, FrameCache, new_account
from chartrl.strategies.base import Policy
from chartrl.timeframe import periods_per_year


@dataclass
class GreedyRun:
    actions: np.ndarray
    rewards: np.ndarray
    """Per-step log change of equity (net of fees)."""
    equity: np.ndarray
    fills: int


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
            [policy.features(frames.get(decisions[i : i + feature_batch]).to(device)).float() for i in range(0, len(decisions), feature_batch)]
        )
        account = new_account(arrays, int(decisions[0]), initial_cash, rules)
        hidden = policy.initial_hidden(1, device)
        actions = np.zeros(len(decisions), np.int64)
        rewards = np.zeros(len(decisions), np.float64)
        equity = np.zeros(len(decisions), np.float64)
        fills = 0
        for i, t in enumerate(decisions):
            pos = torch.tensor([account.position_features(float(arrays.close[t]))], dtype=torch.float32, device=device)
            q, hidden = policy.head(feats[i : i + 1], pos, hidden)
            a = int(q.argmax(dim=-1).item())
            fills += account.execute(a, arrays.candle(int(t) + 1)) is not None
            actions[i], rewards[i], equity[i] = a, account.last_reward, account.equity()
    finally:
        policy.train(was_training)
    return GreedyRun(actions, rewards, equity, fills)


def run_metrics(run: GreedyRun, timeframe: str) -> dict[str, float]:
    """Total return, Sharpe (annualised for ``timeframe``), max drawdown and trade count."""
    r = run.rewards
    total = float(math.expm1(r.sum())) if len(r) else 0.0
    sd = float(r.std(ddof=1)) if len(r) > 1 else 0.0
    sharpe = float(r.mean() / sd * math.sqrt(periods_per_year(timeframe))) if sd > 0 else 0.0
    peak = np.maximum.accumulate(run.equity) if len(run.equity) else np.ones(1)
    dd = float((1 - run.equity / peak).max()) if len(run.equity) else 0.0
    return {"total_return": total, "sharpe": sharpe, "max_drawdown": dd, "trades": float(run.fills)}
