"""Imitation pretraining on the oracle, conditioned on the position the policy is in.

Targets (``imitation_targets``): the fee-aware optimal oracle (``--oracle dp``, default) knows the
optimal action from flat and from long at every candle, so every state the policy can reach has a
correct label (``labels[t, p]``) and an action value (``values[t, p, a]``). The article's extrema
labeller (``--oracle extrema``) labels a candle the same in either position.

How the position evolves: each sampled sequence starts flat or long (half each; a long one entered
at the open of a random earlier candle, so its unrealised return looks like a real holding). Along
a recurrent policy's sequence, the position then follows the policy's OWN greedy action (a no-grad
rollout, DAgger-style): the states it learns on are the states it reaches, and the target at each
step is the oracle's action from that position. Following the label instead would feed the input a
function of future prices (the oracle's hindsight), a lookahead the policy cannot have when it
acts. A stateless policy learns on single frames, in the start position.

Loss (``--imitation-target``): ``labels`` is the plain cross-entropy on the oracle's action. It is
NOT reweighted by default: inverse-frequency weights move the argmax, so a chart that carries no
information got near-uniform scores and traded on two candles in three (``--imitation-weights
inverse`` keeps that behaviour for comparison). ``values`` regresses Q (Huber) to the DP's
discounted action values times ``reward_scale``, so DQN starts from Q on its own scale.

The oracle looks ahead; its labels and values are targets only, never inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from chartrl.actions import Action
from chartrl.strategies.base import N_ACTIONS, frozen_bn_stats, greedy
from chartrl.strategies.oracle import optimal_actions, optimal_values, oracle_labels
from chartrl.train.env import FrameCache

if TYPE_CHECKING:
    from chartrl.account.fills import MarketRules
    from chartrl.train.env import TrainData
    from chartrl.train.series import SeriesPart

MEAN_HOLDING = 24
"""Mean candles since entry of a sequence that starts long (geometric): a day on hourly candles."""


@dataclass(frozen=True)
class Targets:
    labels: np.ndarray
    """int64 (n, 2): the oracle's action at candle t from flat (column 0) and from long (1)."""
    values: np.ndarray | None
    """float32 (n, 2, 3): the DP's discounted action values (dp only), in log-return units."""


def imitation_targets(
    open_: np.ndarray,
    close: np.ndarray,
    oracle: str = "dp",
    *,
    fee: float = 0.001,
    slippage_bps: float = 5.0,
    trade_penalty: float = 0.0,
    window: int = 24,
    gamma: float = 0.99,
) -> Targets:
    """The oracle's labels (and values) over the given candles (the training part only)."""
    if oracle == "extrema":
        lab = oracle_labels(close, window)
        return Targets(np.stack([lab, lab], axis=1), None)
    if oracle != "dp":
        raise ValueError(f"oracle {oracle!r}: use dp or extrema")
    labels = optimal_actions(optimal_values(open_, close, fee, slippage_bps, trade_penalty))
    values = optimal_values(open_, close, fee, slippage_bps, trade_penalty, gamma)
    return Targets(labels, values.astype(np.float32))


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights, normalised so a balanced set gets 1 per class (the old default,
    kept for comparison: they move the argmax towards the rare classes)."""
    counts = np.bincount(labels.ravel(), minlength=N_ACTIONS).astype(np.float64)
    w = counts.sum() / (N_ACTIONS * np.maximum(counts, 1.0))
    return torch.tensor(w, dtype=torch.float32)


def start_positions(
    open_: np.ndarray,
    first: np.ndarray,
    rng: np.random.Generator,
    fee: float | np.ndarray,
    slip: float | np.ndarray = 0.0,
    floor: np.ndarray | int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence: long or flat (half each), and a long one's entry cost (open of a random candle
    at or before ``first``, with slippage and fee), from the past only, and never before ``floor``
    (the first candle of the sequence's series, with several series end to end)."""
    long = rng.random(len(first)) < 0.5
    held = rng.geometric(1.0 / MEAN_HOLDING, len(first)) - 1
    entry = open_[np.maximum(first - held, floor)] * (1 + slip) * (1 + fee)
    return long, np.where(long, entry, 0.0)


def position_features(close: np.ndarray, idx: np.ndarray, long: np.ndarray, entry: np.ndarray):
    """(B, T, 2) float32 (is_long, unrealised log return) of positions ``long``/``entry`` (B, T)
    marked at the closes ``idx`` (B, T)."""
    ur = np.where(long, np.log(close[idx] / np.where(long, entry, 1.0)), 0.0)
    return torch.from_numpy(np.stack([long, ur], -1).astype(np.float32))


def imitation_positions(
    close: np.ndarray, idx: np.ndarray, rng: np.random.Generator, fee: float
) -> torch.Tensor:
    """(B, T, 2) position features of sequences held in their start position throughout."""
    long, entry = start_positions(close, idx[:, 0], rng, fee)
    t = idx.shape[1]
    return position_features(close, idx, np.repeat(long[:, None], t, 1), entry[:, None])


@torch.no_grad()
def follow_policy(
    policy: nn.Module,
    x: torch.Tensor,
    idx: np.ndarray,
    long: np.ndarray,
    entry: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    fee: float | np.ndarray,
    slip: float | np.ndarray,
    burn_in: int,
) -> tuple[torch.Tensor, np.ndarray, object]:
    """Step the policy greedily along its sequences (no gradients, BatchNorm statistics frozen):
    the position it is in at each step (features (B, T, 2) and is_long (B, T)), a buy decided at
    the close of t entering at the open of t+1 as the fill model does, and its hidden state after
    the first ``burn_in`` steps (the learned pass starts from it)."""
    bsz, steps = idx.shape
    held = np.zeros((bsz, steps), dtype=bool)
    ent = np.zeros((bsz, steps))
    long, entry = long.copy(), entry.copy()
    hidden, after_burn_in = None, None
    with frozen_bn_stats(policy):
        for k in range(steps):
            if k == burn_in:
                after_burn_in = hidden
            held[:, k], ent[:, k] = long, entry
            pos = position_features(close, idx[:, k : k + 1], long[:, None], entry[:, None])
            q, hidden = policy(x[:, k : k + 1], pos.to(x.device), hidden)
            act = greedy(q[:, -1].float(), pos[:, -1]).cpu().numpy()
            buy = ~long & (act == int(Action.BUY))
            sell = long & (act == int(Action.SELL))
            entry = np.where(buy, open_[idx[:, k] + 1] * (1 + slip) * (1 + fee), entry)
            long = (long | buy) & ~sell
    return position_features(close, idx, held, ent), held, after_burn_in


def sample_windows(
    decisions: np.ndarray, batch: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """(batch, length) runs of consecutive candles drawn from ``decisions``."""
    starts = rng.integers(0, len(decisions) - length + 1, batch)
    return decisions[starts[:, None] + np.arange(length)[None, :]]


def series_windows(
    parts: Sequence[SeriesPart],
    batch: int,
    length: int,
    rng: np.random.Generator,
    fee: float,
    slip: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``sample_windows`` over several series: each sequence's series drawn by ``series_shares``,
    its window inside that series only. Also per sequence: fee and slippage (its series' fill
    model, else the given ones) and its series' first candle (``start_positions``' floor)."""
    from chartrl.train.series import series_shares

    owner = rng.choice(len(parts), size=batch, p=series_shares(parts))
    idx = np.empty((batch, length), dtype=np.int64)
    for k in np.unique(owner):
        sel = np.flatnonzero(owner == k)
        idx[sel] = sample_windows(parts[k].train, len(sel), length, rng)
    rules = [p.rules for p in parts]
    fees = np.array([r.fee if r is not None else fee for r in rules])[owner]
    slips = np.array([r.slippage_bps / 1e4 if r is not None else slip for r in rules])[owner]
    return idx, fees, slips, np.array([p.start for p in parts])[owner]


def imitation_targets_for(data: TrainData, cfg: Any, rules: MarketRules) -> Targets:
    """``imitation_targets`` of every series of ``data`` on its own training candles (the oracle
    never sees validation candles, nor crosses from one series into the next), by global index;
    each under its series' fill model, else ``rules``."""
    n = len(data.arrays)
    labels = np.zeros((n, 2), dtype=np.int64)
    values = np.zeros((n, 2, N_ACTIONS), dtype=np.float32) if cfg.oracle == "dp" else None
    spans = [(p.start, p.validation_start, p.rules) for p in data.series]
    for lo, hi, own in spans or [(0, data.validation_start, None)]:
        r = own or rules
        tg = imitation_targets(
            data.arrays.open[lo:hi],
            data.arrays.close[lo:hi],
            cfg.oracle,
            fee=r.fee,
            slippage_bps=r.slippage_bps,
            trade_penalty=cfg.oracle_trade_penalty,
            window=cfg.oracle_window,
            gamma=cfg.gamma,
        )
        labels[lo:hi] = tg.labels
        if values is not None and tg.values is not None:
            values[lo:hi] = tg.values
    return Targets(labels, values)


def imitation_epoch(
    policy: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    frames: FrameCache,
    close: np.ndarray,
    decisions: np.ndarray,
    labels: np.ndarray | Targets,
    weights: torch.Tensor | None,
    *,
    batch_size: int,
    seq_len: int,
    burn_in: int,
    fee: float,
    max_grad_norm: float,
    rng: np.random.Generator,
    device: torch.device,
    open_: np.ndarray | None = None,
    slippage_bps: float = 0.0,
    target: str = "labels",
    reward_scale: float = 100.0,
    max_updates: int | None = None,
    on_update: Callable[[float], None] | None = None,
    series: Sequence[SeriesPart] = (),
) -> float:
    """One pass (in expectation) over ``decisions``; the mean loss. ``labels``: Targets, or one
    label per candle whatever the position (broadcast). ``weights``: class weights of the
    cross-entropy, None for none. ``open_``: fill prices of the rollout (default: the previous
    close, gap-free). ``model`` is ``policy`` or its DDP wrapper (the gradient step goes through
    it, the no-grad rollout through ``policy``). ``series``: with several, each sequence is drawn
    inside one of them (``series_windows``), ``decisions`` only sets the epoch's length."""
    tg = labels if isinstance(labels, Targets) else Targets(np.stack([labels, labels], 1), None)
    if target == "values" and tg.values is None:
        raise ValueError("imitation target 'values' needs the dp oracle's action values")
    open_ = open_ if open_ is not None else np.r_[close[:1], close[:-1]]
    slip = slippage_bps / 1e4
    recurrent = bool(getattr(policy, "recurrent", False))
    b, t = (burn_in, seq_len) if recurrent else (0, 1)
    n_seq = batch_size if recurrent else batch_size * seq_len  # same labelled frames per update
    updates = max(1, len(decisions) // (n_seq * t))
    if max_updates:
        updates = min(updates, max_updates)
    amp = device.type == "cuda"
    weights = weights.to(device) if weights is not None else None
    policy.train()
    total = 0.0
    for _ in range(updates):
        if len(series) > 1:
            idx, fees, slips, floor = series_windows(series, n_seq, b + t, rng, fee, slip)
        else:
            idx, fees, slips, floor = sample_windows(decisions, n_seq, b + t, rng), fee, slip, 0
        x = frames.get(idx)
        x = x.view(n_seq, b + t, *x.shape[1:]).to(device, non_blocking=True)
        long0, entry0 = start_positions(open_, idx[:, 0], rng, fees, slips, floor)
        hidden = None
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            if b + t > 1:
                pos, held, hidden = follow_policy(
                    policy, x, idx, long0, entry0, open_, close, fees, slips, b
                )
            else:
                held = long0[:, None]
                pos = position_features(close, idx, held, entry0[:, None])
            q, _ = model(x[:, b:], pos[:, b:].to(device), hidden)
        rows, cols = idx[:, b:], held[:, b:].astype(np.int64)
        q = q.float().reshape(-1, N_ACTIONS)
        if target == "values":
            y = torch.from_numpy(tg.values[rows, cols] * reward_scale).to(device)
            loss = F.smooth_l1_loss(q, y.reshape(-1, N_ACTIONS))
        else:
            y = torch.from_numpy(tg.labels[rows, cols]).to(device)
            loss = F.cross_entropy(q, y.reshape(-1), weight=weights)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.item())
        if on_update:
            on_update(float(loss.item()))
    return total / updates
