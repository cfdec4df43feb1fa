"""Imitation pretraining on the oracle labels (buy at a window minimum, sell at a maximum).

Most labels are hold, so the cross-entropy is weighted by inverse class frequency. Recurrent
policies learn on contiguous sequences with truncated backpropagation through time (a burn-in
from a zero hidden state, then ``seq_len`` steps with gradients), never on shuffled single frames;
stateless policies learn on single frames.

The labels look ahead; they are targets only. The position features fed during imitation are
drawn per sequence from the past alone (flat, or long since the sequence's first candle at that
close plus the fee), so nothing derived from a label reaches the input.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from chartrl.strategies.base import N_ACTIONS, frozen_bn_stats
from chartrl.train.env import FrameCache


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights, normalised so a balanced set gets 1 per class."""
    counts = np.bincount(labels, minlength=N_ACTIONS).astype(np.float64)
    w = counts.sum() / (N_ACTIONS * np.maximum(counts, 1.0))
    return torch.tensor(w, dtype=torch.float32)


def imitation_positions(
    close: np.ndarray, idx: np.ndarray, rng: np.random.Generator, fee: float
) -> torch.Tensor:
    """(B, T, 2) position features from the past only: per sequence flat, or long since idx[:, 0]."""
    long = rng.random(idx.shape[0]) < 0.5
    entry = close[idx[:, 0]] * (1 + fee)
    ur = np.log(close[idx] / entry[:, None]) * long[:, None]
    return torch.from_numpy(
        np.stack(
            [np.broadcast_to(long[:, None], idx.shape).astype(np.float32), ur.astype(np.float32)],
            -1,
        )
    )


def sample_windows(
    decisions: np.ndarray, batch: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """(batch, length) runs of consecutive candles drawn from ``decisions``."""
    starts = rng.integers(0, len(decisions) - length + 1, batch)
    return decisions[starts[:, None] + np.arange(length)[None, :]]


def imitation_epoch(
    policy: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    frames: FrameCache,
    close: np.ndarray,
    decisions: np.ndarray,
    labels: np.ndarray,
    weights: torch.Tensor,
    *,
    batch_size: int,
    seq_len: int,
    burn_in: int,
    fee: float,
    max_grad_norm: float,
    rng: np.random.Generator,
    device: torch.device,
    max_updates: int | None = None,
    on_update: Callable[[float], None] | None = None,
) -> float:
    """One pass (in expectation) over ``decisions``; the mean loss. ``model`` is ``policy`` or its
    DDP wrapper (the gradient step goes through it, the no-grad burn-in through ``policy``, with
    BatchNorm's running statistics frozen so only the learned steps move them)."""
    recurrent = bool(getattr(policy, "recurrent", False))
    b, t = (burn_in, seq_len) if recurrent else (0, 1)
    n_seq = batch_size if recurrent else batch_size * seq_len  # same labelled frames per update
    updates = max(1, len(decisions) // (n_seq * t))
    if max_updates:
        updates = min(updates, max_updates)
    amp = device.type == "cuda"
    weights = weights.to(device)
    policy.train()
    total = 0.0
    for _ in range(updates):
        idx = sample_windows(decisions, n_seq, b + t, rng)
        x = frames.get(idx)
        x = x.view(n_seq, b + t, *x.shape[1:]).to(device, non_blocking=True)
        pos = imitation_positions(close, idx, rng, fee).to(device)
        y = torch.from_numpy(labels[idx[:, b:]]).to(device)
        hidden = None
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            if b:
                with torch.no_grad(), frozen_bn_stats(policy):
                    _, hidden = policy(x[:, :b], pos[:, :b], None)
            q, _ = model(x[:, b:], pos[:, b:], hidden)
        loss = F.cross_entropy(q.float().reshape(-1, N_ACTIONS), y.reshape(-1), weight=weights)
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
