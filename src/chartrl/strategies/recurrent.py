"""CNN + recurrent policies: the chart features of each candle feed a recurrent cell whose hidden
state is carried from one candle to the next, so the policy sees the order of chart patterns.

The caller owns the hidden state (the trainer per lane, the backtest per run, the daemon across
ticks) and passes it back in on the next candle; nothing here re-creates it per call. ``head``
accepts one step ``(B, F)`` or a sequence ``(B, T, F)``; both give the same numbers for the same
inputs, which is what lets the trainer learn on stored sequences and the daemon act step by step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from chartrl.strategies.base import DEFAULT_NORM, N_POSITION_FEATURES, Hidden, Policy
from chartrl.strategies.cnn import ConvEncoder, q_output


class _RecurrentPolicy(Policy):
    recurrent = True
    cell_type: type[nn.RNNBase] = nn.RNN

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        widths: tuple[int, ...] = (16, 32, 32),
        feat_dim: int = 128,
        hidden_size: int = 128,
        norm: str = DEFAULT_NORM,
        dueling: bool = False,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "height": height,
            "width": width,
            "widths": list(widths),
            "feat_dim": feat_dim,
            "hidden_size": hidden_size,
            "norm": norm,
            "dueling": dueling,
        }
        self.encoder = ConvEncoder(in_channels, height, width, tuple(widths), feat_dim, norm)
        self.hidden_size = hidden_size
        self.cell = self._make_cell(feat_dim + N_POSITION_FEATURES, hidden_size)
        # hidden-to-output; the position enters again so "am I long" needs no memory to be read.
        self.out = q_output(hidden_size + N_POSITION_FEATURES, dueling=dueling)

    def _make_cell(self, n_in: int, n_hidden: int) -> nn.RNNBase:
        raise NotImplementedError

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames)

    def initial_hidden(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(1, batch, self.hidden_size, device=device)

    def head(
        self, feats: torch.Tensor, position: torch.Tensor, hidden: Hidden = None
    ) -> tuple[torch.Tensor, Hidden]:
        single = feats.dim() == 2
        if single:
            feats, position = feats.unsqueeze(1), position.unsqueeze(1)
        position = position.to(feats.dtype)
        if hidden is None:
            hidden = self.initial_hidden(feats.shape[0], feats.device)
        seq, hidden = self.cell(torch.cat([feats, position], dim=-1), hidden.to(feats.dtype))
        q = self.out(torch.cat([seq, position], dim=-1))
        return (q.squeeze(1) if single else q), hidden


class CNNRNNPolicy(_RecurrentPolicy):
    """CNN features -> Elman cell h_t = tanh(W_ih x_t + W_hh h_{t-1} + b) -> linear Q output."""

    name = "cnnrnn"

    def _make_cell(self, n_in: int, n_hidden: int) -> nn.RNNBase:
        # torch's nn.RNN with tanh *is* the Elman network (input-to-hidden + hidden-to-hidden, tanh).
        return nn.RNN(n_in, n_hidden, nonlinearity="tanh", batch_first=True)


class GRUPolicy(_RecurrentPolicy):
    """CNN features -> GRU cell (gated, so it can keep a pattern in memory longer) -> linear Q."""

    name = "gru"

    def _make_cell(self, n_in: int, n_hidden: int) -> nn.RNNBase:
        return nn.GRU(n_in, n_hidden, batch_first=True)
