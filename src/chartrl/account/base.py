"""The Account interface shared by backtest, paper and live trading.

``execute(action, candle)`` is called once per decision: ``action`` was decided at the close of the
previous candle and ``candle`` is the candle whose open fills it (t+1). A simulated account fills
at that open through :func:`chartrl.account.fills.simulate_fill`; the live account sends a market
order at that moment instead. After ``execute`` the account is marked to ``candle``'s close.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

from chartrl.account.fills import Book, Fill, MarketRules, simulate_fill


@dataclass(frozen=True)
class Candle:
    timestamp: int
    """Open time, ms UTC."""
    open: float
    high: float
    low: float
    close: float
    volume: float


class Account(ABC):
    """What the pipeline needs from any account."""

    @abstractmethod
    def execute(self, action: int, candle: Candle) -> Fill | None: ...

    @property
    @abstractmethod
    def cash(self) -> float: ...

    @property
    @abstractmethod
    def position(self) -> float: ...

    @abstractmethod
    def equity(self, price: float | None = None) -> float:
        """Equity at ``price`` (default: the last mark)."""

    @abstractmethod
    def position_features(self, price: float | None = None) -> tuple[float, float]:
        """(is_long, unrealised log return): what the policy sees of its own position."""


class SimAccount(Account):
    """Backtest and paper account: the shared fill model over a :class:`Book`."""

    def __init__(
        self, initial_cash: float, rules: MarketRules | None = None, book: Book | None = None
    ) -> None:
        self.rules = rules or MarketRules()
        self.book = book or Book(cash=initial_cash)
        self.initial_cash = initial_cash
        self.last_price: float | None = None
        self.last_reward = 0.0

    def execute(self, action: int, candle: Candle) -> Fill | None:
        before = self.equity(candle.open) if self.last_price is None else self.equity()
        fill = simulate_fill(self.book, action, candle.open, candle.timestamp, self.rules)
        self.last_price = candle.close
        after = self.equity()
        # Reward of the step: log change of equity, fees and slippage included (0 when wiped out).
        self.last_reward = math.log(after / before) if before > 0 and after > 0 else -10.0
        return fill

    @property
    def cash(self) -> float:
        return self.book.cash

    @property
    def position(self) -> float:
        return self.book.position

    def equity(self, price: float | None = None) -> float:
        p = price if price is not None else self.last_price
        return self.book.cash if p is None else self.book.equity(p)

    def position_features(self, price: float | None = None) -> tuple[float, float]:
        p = price if price is not None else self.last_price
        return (0.0, 0.0) if p is None else self.book.position_features(p)

    @property
    def bankrupt(self) -> bool:
        """Equity below 1% of the start: the episode is over (the article's convenience)."""
        return self.equity() < 0.01 * self.initial_cash
