"""A torchvision ResNet-18 (random init, nothing downloaded) adapted to the small chart image.

The ImageNet stem (7x7 stride-2 conv + max-pool) would shrink a 100x140 chart to 25x35 before the
first residual block; here the stem is one 3x3 conv (stride ``stem_stride``, default 2 to keep a
CPU epoch affordable; 1 keeps full resolution) and no max-pool, ``in_channels`` follows the spec.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from chartrl.strategies.base import DEFAULT_NORM, Hidden, Policy, frames_to_float, norm2d
from chartrl.strategies.cnn import QHead


class ResNetPolicy(Policy):
    """ResNet-18 features (global average pool, 512) -> MLP Q head; stateless like ``cnn``."""

    name = "resnet"
    recurrent = False

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        stem_stride: int = 2,
        head_hidden: int = 64,
        norm: str = DEFAULT_NORM,
        dueling: bool = False,
    ) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "height": height,
            "width": width,
            "stem_stride": stem_stride,
            "head_hidden": head_hidden,
            "norm": norm,
            "dueling": dueling,
        }
        norm2d(norm, 8)  # refuses an unknown kind before torchvision builds anything
        net = resnet18(weights=None, norm_layer=lambda c: norm2d(norm, c))
        net.conv1 = nn.Conv2d(
            in_channels, 64, kernel_size=3, stride=stem_stride, padding=1, bias=False
        )
        net.maxpool = nn.Identity()
        feat_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.backbone = net
        self.q = QHead(feat_dim, head_hidden, dueling)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.backbone(frames_to_float(frames))

    def head(
        self, feats: torch.Tensor, position: torch.Tensor, hidden: Hidden = None
    ) -> tuple[torch.Tensor, Hidden]:
        return self.q(feats, position), None
