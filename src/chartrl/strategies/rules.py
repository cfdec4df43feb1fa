"""Rule baselines behind the strategies interface: buyhold, sma, random and the (cheating) oracle.

A rule strategy is prepared once over the candle series (vectorised, causal indicators) and then
asked ``decide(t, position)`` at the close of each candle t, with the account's position features
(is_long, unrealised log return) as the neural policies get them. Every rule except the oracle
decides from candles <= t only; the oracle reads the future on purpose and is flagged
``cheating`` so every report labels it an upper bound, never a result.

Rules also follow the policies' interface, ``forward(frames, position, hidden) -> (q, hidden)``:
they ignore the frames, their "hidden state" is the candle index t of the current step (so the
caller carries it as it carries a recurrent state), and Q is the one-hot of ``decide``'s action.
``RULES`` is the one name -> class registry; ``chartrl.strategies.registry`` reads it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pandas as pd
import torch

from chartrl.account.fills import MarketRules
from chartrl.strategies.base import N_ACTIONS, Action


class RuleStrategy(ABC):
    """A baseline that decides from precomputed per-candle series."""

    name: str = "rule"
    cheating: bool = False
    """True when the rule reads candles after t (the oracle): an upper bound, not a result."""

    def prepare(self, candles: pd.DataFrame) -> None:
        """Precompute whatever ``decide`` needs over the whole series (causally, except the oracle)."""
        return None  # buyhold needs nothing

    @abstractmethod
    def decide(self, t: int, position: tuple[float, float]) -> int:
        """Action at the close of candle ``t`` (an index into the prepared series)."""

    def params(self) -> dict:
        """The rule's parameters, for reports."""
        return {}

    def initial_hidden(
        self, batch: int, device: torch.device | str = "cpu", start: int = 0
    ) -> torch.Tensor:
        """The state of ``batch`` runs whose first decision is at candle ``start``: that index."""
        return torch.full((batch,), start, dtype=torch.int64, device=device)

    def forward(
        self, frames: object, position: torch.Tensor, hidden: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy interface: ``position`` (B, 2) or (B, T, 2) -> one-hot Q (B[, T], 3) of
        ``decide`` at candles ``hidden`` (B,) onwards, and the candle index after the last step."""
        if hidden is None:
            raise ValueError(
                f"rule {self.name!r} needs the candle index as its state: pass initial_hidden(batch, start=t)"
            )
        single = position.dim() == 2
        pos = (position.unsqueeze(1) if single else position).detach().cpu().numpy()
        t0 = hidden.detach().cpu().numpy()
        actions = np.array(
            [
                [
                    self.decide(int(t0[b]) + k, (float(pos[b, k, 0]), float(pos[b, k, 1])))
                    for k in range(pos.shape[1])
                ]
                for b in range(pos.shape[0])
            ],
            dtype=np.int64,
        ).reshape(pos.shape[:2])
        q = torch.nn.functional.one_hot(torch.from_numpy(actions), N_ACTIONS).to(
            position.device, torch.float32
        )
        return (q.squeeze(1) if single else q), hidden + pos.shape[1]

    __call__ = forward


class BuyHold(RuleStrategy):
    """Buy at the first decision and never sell."""

    name = "buyhold"

    def decide(self, t: int, position: tuple[float, float]) -> int:
        return int(Action.BUY) if position[0] < 0.5 else int(Action.HOLD)


class SMACrossover(RuleStrategy):
    """Long while the fast simple moving average of closes is above the slow one, flat otherwise."""

    name = "sma"

    def __init__(self, fast: int = 5, slow: int = 20) -> None:
        if not 1 <= fast < slow:
            raise ValueError(f"sma periods need 1 <= fast < slow, got fast={fast} slow={slow}")
        self.fast, self.slow = fast, slow
        self._signal = np.zeros(0, dtype=np.int64)

    def prepare(self, candles: pd.DataFrame) -> None:
        close = candles["close"].astype("float64")
        # rolling() only looks back, so the signal at t uses closes <= t.
        fast = close.rolling(self.fast, min_periods=self.fast).mean().to_numpy()
        slow = close.rolling(self.slow, min_periods=self.slow).mean().to_numpy()
        signal = np.full(len(close), int(Action.HOLD), dtype=np.int64)
        signal[fast > slow] = int(Action.BUY)
        signal[fast < slow] = int(Action.SELL)
        self._signal = signal

    def decide(self, t: int, position: tuple[float, float]) -> int:
        return int(self._signal[t])

    def params(self) -> dict:
        return {"fast": self.fast, "slow": self.slow}


class RandomStrategy(RuleStrategy):
    """Seeded coin flips: buy or sell each with probability ``trade_prob / 2``, else hold.

    The draw for candle t depends only on the seed and t, not on prices, so it cannot look ahead.
    """

    name = "random"

    def __init__(self, seed: int = 0, trade_prob: float = 0.1) -> None:
        if not 0 < trade_prob <= 1:
            raise ValueError(f"random trade_prob must be in (0, 1], got {trade_prob}")
        self.seed, self.trade_prob = seed, trade_prob
        self._u = np.zeros(0)

    def prepare(self, candles: pd.DataFrame) -> None:
        # Sequential draws: the first k values are the same whatever the series length.
        self._u = np.random.default_rng(self.seed).random(len(candles))

    def decide(self, t: int, position: tuple[float, float]) -> int:
        u = self._u[t]
        if u < self.trade_prob / 2:
            return int(Action.BUY)
        if u < self.trade_prob:
            return int(Action.SELL)
        return int(Action.HOLD)

    def params(self) -> dict:
        return {"seed": self.seed, "trade_prob": self.trade_prob}


ORACLE_METHODS = ("dp", "extrema")
DEFAULT_TRADE_PENALTY = 0.02
"""The oracle's default penalty per round trip (log-return units): about 4 round trips a week on
hourly BTC/USDT 2017-2021 and ETC/BTC 2017-2020 (benchmarks/oracle_penalty.py, docs/training.md)."""


class OracleStrategy(RuleStrategy):
    """The hindsight upper bound. CHEATS (reads ahead).

    ``dp`` (default): the fee-aware optimal long/flat path (``strategies.oracle.optimal_values``)
    under the fill model's fee and slippage, acting from the account's actual position, with
    ``trade_penalty`` per round trip. ``extrema``: the article's labeller, buy at a window minimum,
    sell at a maximum, whatever the position.
    """

    name = "oracle"
    cheating = True

    def __init__(
        self,
        window: int = 24,
        method: str = "dp",
        trade_penalty: float = DEFAULT_TRADE_PENALTY,
        fee: float = 0.001,
        slippage_bps: float = 5.0,
    ) -> None:
        if method not in ORACLE_METHODS:
            raise ValueError(f"oracle method {method!r}: use one of {', '.join(ORACLE_METHODS)}")
        if trade_penalty < 0:
            raise ValueError(f"oracle trade_penalty must be >= 0, got {trade_penalty}")
        self.window, self.method, self.trade_penalty = window, method, trade_penalty
        self.fee, self.slippage_bps = fee, slippage_bps
        self._labels = np.zeros((0, 2), dtype=np.int64)

    def prepare(self, candles: pd.DataFrame) -> None:
        from chartrl.strategies.oracle import optimal_actions, optimal_values, oracle_labels

        if self.method == "extrema":
            labels = oracle_labels(candles["close"].to_numpy(), self.window)
            self._labels = np.stack([labels, labels], axis=1)
            return
        q = optimal_values(
            candles["open"].to_numpy(np.float64),
            candles["close"].to_numpy(np.float64),
            self.fee,
            self.slippage_bps,
            self.trade_penalty,
        )
        self._labels = optimal_actions(q)

    def decide(self, t: int, position: tuple[float, float]) -> int:
        return int(self._labels[t, int(position[0] >= 0.5)])

    def params(self) -> dict:
        if self.method == "extrema":
            return {"method": "extrema", "window": self.window}
        return {
            "method": "dp",
            "trade_penalty": self.trade_penalty,
            "fee": self.fee,
            "slippage_bps": self.slippage_bps,
        }


# The one registry of rule baselines (chartrl.strategies.registry builds from it).
RULES: dict[str, type[RuleStrategy]] = {
    "buyhold": BuyHold,
    "sma": SMACrossover,
    "random": RandomStrategy,
    "oracle": OracleStrategy,
}


def make_rule(
    name: str,
    sma: tuple[int, int] = (5, 20),
    seed: int = 0,
    oracle_window: int = 24,
    oracle: str = "dp",
    oracle_trade_penalty: float = DEFAULT_TRADE_PENALTY,
    rules: MarketRules | None = None,
) -> RuleStrategy:
    """A rule by name (through the registry) with the backtest command's knobs, each passed to the
    rule it belongs to; the oracle prices its path with ``rules``' fee and slippage (the fills the
    backtest will charge), defaults when none are given."""
    from chartrl.strategies.registry import build_rule

    rules = rules or MarketRules()
    kwargs = {
        "sma": {"fast": sma[0], "slow": sma[1]},
        "random": {"seed": seed},
        "oracle": {
            "window": oracle_window,
            "method": oracle,
            "trade_penalty": oracle_trade_penalty,
            "fee": rules.fee,
            "slippage_bps": rules.slippage_bps,
        },
    }
    return build_rule(name, **kwargs.get(name, {}))
