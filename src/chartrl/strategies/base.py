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

import numpy as np
import torch
from torch import nn

from chartrl.actions import N_ACTIONS, Action

__all__ = [
    "N_ACTIONS",
    "N_POSITION_FEATURES",
    "Action",
    "Hidden",
    "DEFAULT_NORM",
    "FrameStack",
    "NORMS",
    "Policy",
    "frames_to_float",
    "frozen_bn_stats",
    "greedy",
    "norm2d",
    "stack_frames",
    "valid_actions",
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


def valid_actions(position: torch.Tensor) -> torch.Tensor:
    """Bool ``(..., 3)`` of the actions that change something from ``position`` ``(..., 2)``:
    hold always, buy only while flat, sell only while long. A buy while long or a sell while flat
    is a hold in the fill model, so its Q-value is never acted on, learned or bootstrapped from
    (invalid-action masking, Huang & Ontanon 2020): a greedy policy cannot look active by
    answering orders that do nothing, and the max of a DQN target ranges over two real choices."""
    long = position[..., 0] > 0.5
    return torch.stack([torch.ones_like(long), ~long, long], dim=-1)


def greedy(q: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """int64 ``(...)``: the best valid action of Q-values ``(..., 3)`` from ``position``; a tie
    holds (hold comes first), so a policy never trades for nothing."""
    mask = valid_actions(position.to(q.device))
    return q.masked_fill(~mask, float("-inf")).argmax(-1)


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


class FrameStack:
    """The frames of the last ``k`` candles, oldest first, as the channels of one frame: what a
    ``cnn --frame-stack k`` policy reads (a short memory with no recurrence). Wraps a renderer
    (``render`` / ``valid_indices``: backtest, daemon) or a frame cache (``get`` / ``valid``: the
    trainer), so every driver stacks the same way. Before the first chart of a run of valid
    charts the oldest available frame repeats, as Atari DQN pads an episode's first frames."""

    def __init__(self, source: Any, k: int) -> None:
        self.source, self.k = source, k
        if hasattr(source, "get"):  # a FrameCache
            self.valid = np.asarray(source.valid, dtype=bool)
        else:
            got = np.asarray(source.valid_indices, dtype=np.int64)
            self.valid = np.zeros(int(got.max()) + 1 if len(got) else 0, dtype=bool)
            self.valid[got] = True

    def __getattr__(self, name: str) -> Any:  # valid_indices, channels, render_seconds, ...
        return getattr(self.source, name)

    def indices(self, end: np.ndarray) -> np.ndarray:
        """``(N, k)`` candle indices of the frames stacked for each of ``end``, oldest first."""
        cols = [np.asarray(end, dtype=np.int64).reshape(-1)]
        ok = np.ones(len(cols[0]), dtype=bool)
        for j in range(1, self.k):
            back = cols[0] - j
            inside = (back >= 0) & (back < len(self.valid))
            ok &= inside & self.valid[np.clip(back, 0, max(len(self.valid) - 1, 0))]
            cols.append(np.where(ok, back, cols[-1]))
        return np.stack(cols[::-1], axis=1)

    def _stack(self, frames: Any, n: int) -> torch.Tensor:
        frames = torch.as_tensor(frames)
        return frames.reshape(n, self.k * frames.shape[1], *frames.shape[2:])

    def render(self, end_indices: Any) -> torch.Tensor:
        idx = self.indices(np.asarray(end_indices))
        return self._stack(self.source.render(idx.reshape(-1)), len(idx))

    def get(self, indices: Any) -> torch.Tensor:
        idx = self.indices(np.asarray(indices))
        return self._stack(self.source.get(idx.reshape(-1)), len(idx))


def stack_frames(source: Any, policy: Any) -> Any:
    """``source`` as ``policy`` reads it: stacked when it was built with a frame stack."""
    k = int(getattr(policy, "frame_stack", 1) or 1)
    return FrameStack(source, k) if k > 1 else source
