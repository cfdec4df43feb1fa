"""The CNN-only DQN baseline and the small convolutional encoder every chart policy shares.

Normalisation (``norm``, see :data:`chartrl.strategies.base.NORMS`): the default, GroupNorm, gives
a frame the same features in ``train()`` and ``eval()`` mode and whatever else is in the batch, so
acting, learning and the target network compute one function. With ``norm="batch"`` (and every
model saved before ``norm`` existed) a policy is in ``train()`` mode only for optimisation steps
(batch statistics over the sampled frames) and in ``eval()`` mode for acting, evaluation and the
target network (running statistics): in eval mode the same frame always gives the same Q-values,
a batch of 1 (the daemon) as a batch of 8 (the trainer), but they are not the function learned.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from chartrl.strategies.base import (
    DEFAULT_NORM,
    N_ACTIONS,
    N_POSITION_FEATURES,
    Hidden,
    Policy,
    frames_to_float,
    norm2d,
)


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


class ConvEncoder(nn.Module):
    """Three conv + norm + ReLU blocks, all stride 2, then one linear layer.

    Sized for a 2-core CPU: on the default 100x140 chart it costs ~10 M multiply-adds per frame.
    The stride-2 first conv with a 5x5 kernel halves the picture before any wide layer runs; no
    global pooling, because where a pattern sits on the chart (the right edge is "now") matters.
    """

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        widths: tuple[int, ...] = (16, 32, 32),
        feat_dim: int = 128,
        norm: str = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, h, w = in_channels, height, width
        for i, out in enumerate(widths):
            k = 5 if i == 0 else 3
            layers += [
                nn.Conv2d(c, out, k, stride=2, padding=k // 2, bias=norm == "none"),
                norm2d(norm, out),
                nn.ReLU(inplace=True),
            ]
            c, h, w = out, _conv_out(h, k, 2, k // 2), _conv_out(w, k, 2, k // 2)
        self.conv = nn.Sequential(*layers)
        self.proj = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, feat_dim), nn.ReLU(inplace=True)
        )
        self.feat_dim = feat_dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(frames_to_float(frames)))


class DuelingQ(nn.Module):
    """Q = V + A - mean(A) (Wang et al., 2016): a value stream and an advantage stream, each one
    linear layer or an MLP with ``hidden`` units; the mean keeps V and A identifiable."""

    def __init__(self, n_in: int, hidden: int = 0) -> None:
        super().__init__()
        self.value = _linear_or_mlp(n_in, hidden, 1)
        self.advantage = _linear_or_mlp(n_in, hidden, N_ACTIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.advantage(x)
        return self.value(x) + a - a.mean(-1, keepdim=True)


def _linear_or_mlp(n_in: int, hidden: int, n_out: int) -> nn.Module:
    if hidden == 0:
        return nn.Linear(n_in, n_out)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_out))


def q_output(n_in: int, hidden: int = 0, dueling: bool = False) -> nn.Module:
    """Inputs -> Q-values of hold, buy, sell: linear (or an MLP), or a dueling head."""
    return DuelingQ(n_in, hidden) if dueling else _linear_or_mlp(n_in, hidden, N_ACTIONS)


class QHead(nn.Module):
    """Chart features + position features -> Q-values of hold, buy, sell: one linear layer, or an
    MLP with ``hidden`` units (ResNet's 512 pooled features), or their dueling form."""

    def __init__(self, feat_dim: int, hidden: int = 0, dueling: bool = False) -> None:
        super().__init__()
        self.net = q_output(feat_dim + N_POSITION_FEATURES, hidden, dueling)

    def forward(self, feats: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([feats, position.to(feats.dtype)], dim=-1))


class CNNPolicy(Policy):
    """CNN-only DQN: three conv + norm blocks (and their projection), then a linear Q head on
    the features and the position; each decision sees only the current chart (no memory)."""

    name = "cnn"
    recurrent = False

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        widths: tuple[int, ...] = (16, 32, 32),
        feat_dim: int = 128,
        norm: str = DEFAULT_NORM,
        dueling: bool = False,
        frame_stack: int = 1,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "height": height,
            "width": width,
            "widths": list(widths),
            "feat_dim": feat_dim,
            "norm": norm,
            "dueling": dueling,
            "frame_stack": frame_stack,
        }
        # frame_stack: the charts of the last k candles arrive as k * in_channels channels (the
        # drivers stack them with strategies.base.stack_frames), a memory of k candles, no more.
        self.frame_stack = frame_stack
        self.encoder = ConvEncoder(
            in_channels * frame_stack, height, width, tuple(widths), feat_dim, norm
        )
        self.q = QHead(feat_dim, dueling=dueling)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames)

    def head(
        self, feats: torch.Tensor, position: torch.Tensor, hidden: Hidden = None
    ) -> tuple[torch.Tensor, Hidden]:
        # Works for (B, F) and (B, T, F) alike: every step is independent.
        return self.q(feats, position), None
