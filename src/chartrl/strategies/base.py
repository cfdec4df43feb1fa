"""The one interface every policy follows, neural or rule-based.

Actions: 0 hold, 1 buy, 2 sell. A policy sees the chart frames up to and including candle t and the
account's position features (long flag, unrealised log return) and answers Q-values for the three
actions. Recurrent policies carry ``hidden`` from one candle to the next; the caller keeps it
(backtest loop, daemon ledger) and passes it back in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from chartrl.actions import N_ACTIONS, Action

__all__ = [
    "N_ACTIONS",
    "N_POSITION_FEATURES",
    "Action",
    "Hidden",
    "DEFAULT_NORM",
    "NORMS",
    "Policy",
    "frames_to_float",
    "frozen_bn_stats",
    "norm2d",
]

N_POSITION_FEATURES = 2  # (is_long in {0, 1}, unrealised log return of the open position or 0)


NORMS = ("batch", "group", "layer", "none")
DEFAULT_NORM = "group"
"""Normalisation of the conv layers: GroupNorm computes the same function of a frame whatever the
mode and the batch, so acting, learning and the target network agree (invariant 10); BatchNorm
normalises by the batch in train() mode and by running statistics in eval() mode, and models saved
before ``norm`` existed use it."""
GROUPS = 8


def norm2d(kind: str, channels: int) -> nn.Module:
    """The normalisation after a conv layer of ``channels`` outputs: ``batch`` (BatchNorm2d),
    ``group`` (GroupNorm, 8 groups, or 1 where the channels do not divide), ``layer`` (GroupNorm with
    one group: each frame normalised over all its channels and pixels) or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(GROUPS if channels % GROUPS == 0 else 1, channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm {kind!r}: use one of {', '.join(NORMS)}")


Hidden = Any  # None for stateless policies, a tensor (layers, B, H) for the recurrent ones


class Policy(nn.Module):
    """Base of the neural policies.

    ``features`` is the expensive, per-frame part (the CNN): it can run batched over every frame of
    a series at once. ``head`` is the cheap, sequential part (recurrent cell + Q head) that steps in
    time. ``forward`` is the two together, for one step ``(B, C, H, W)`` or a sequence
    ``(B, T, C, H, W)``.
    """

    name: str = "policy"
    recurrent: bool = False

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` uint8 or float frames -> ``(N, F)`` features."""
        raise NotImplementedError

    def head(
        self, feats: torch.Tensor, position: torch.Tensor, hidden: Hidden = None
    ) -> tuple[torch.Tensor, Hidden]:
        """``(B, F)`` or ``(B, T, F)`` features + ``(B[, T], 2)`` position -> Q ``(B[, T], 3)``, hidden."""
        raise NotImplementedError

    def initial_hidden(self, batch: int, device: torch.device | str = "cpu") -> Hidden:
        return None

    def forward(
        self, frames: torch.Tensor, position: torch.Tensor, hidden: Hidden = None
    ) -> tuple[torch.Tensor, Hidden]:
        if frames.dim() == 5:  # (B, T, C, H, W): the CNN runs on all B*T frames at once
            b, t = frames.shape[:2]
            feats = self.features(frames.flatten(0, 1)).unflatten(0, (b, t))
        else:
            feats = self.features(frames)
        return self.head(feats, position, hidden)


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float 0..1 (no-op for float input)."""
    return frames.float().div_(255.0) if frames.dtype == torch.uint8 else frames


@contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Run the block with BatchNorm normalising by the batch, as in the learned pass, but without
    moving its running statistics: the no-grad passes of a training step (burn-in, next-state
    argmax) see frames that are never learned from.

    Not eval mode: early in training the running statistics are still the defaults, so a burn-in
    normalised by them hands the learned steps a hidden state from features on another scale (on
    the BTC history that left a cnnrnn seed stuck at chance for a whole imitation run).
    """
    saved = [
        (m, m.momentum, m.num_batches_tracked.clone())
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and m.num_batches_tracked is not None
    ]
    for m, _, _ in saved:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
