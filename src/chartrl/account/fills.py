"""The one fill model shared by the backtest, the training environment and the paper account.

A decision taken at the close of candle t fills at the open of candle t+1, pays the taker fee and
a slippage (against us), respects the market's minimum amount / notional and amount precision, and
is long-only spot. Sizing is all-in/all-out or a fixed fraction of equity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from chartrl.actions import Action


@dataclass(frozen=True)
class MarketRules:
    """What the exchange allows and charges (from ccxt market info when known)."""

    fee: float = 0.001
    """Taker fee per side, fraction of notional."""
    slippage_bps: float = 5.0
    """Price moves this many basis points against us on every fill."""
    amount_step: float | None = None
    """Amount precision as a step (0.00001 BTC); amounts are rounded down to it."""
    min_amount: float = 0.0
    """Smallest order amount in the base currency."""
    min_notional: float = 0.0
    """Smallest order value in the quote currency."""
    position_fraction: float = 1.0
    """Fraction of equity a buy invests (1 = all-in)."""


@dataclass(frozen=True)
class Fill:
    timestamp: int
    """Open time (ms UTC) of the candle whose open price filled the order."""
    side: str
    """'buy' or 'sell'."""
    price: float
    """Fill price after slippage."""
    amount: float
    """Base amount bought or sold."""
    fee: float
    """Fee paid, quote currency."""

    @property
    def notional(self) -> float:
        return self.price * self.amount


@dataclass
class Book:
    """Cash, position and running totals of one long-only spot account."""

    cash: float
    position: float = 0.0
    entry_price: float = 0.0
    """Average cost of the open position including fees (0 when flat)."""
    fees_paid: float = 0.0
    turnover: float = 0.0
    fills: list[Fill] = field(default_factory=list)

    def equity(self, price: float) -> float:
        return self.cash + self.position * price

    def position_features(self, price: float) -> tuple[float, float]:
        """(is_long, unrealised log return vs entry cost): the policy's view of its own position."""
        if self.position <= 0 or self.entry_price <= 0:
            return 0.0, 0.0
        return 1.0, math.log(price / self.entry_price)


def round_amount(amount: float, step: float | None) -> float:
    """Round down to the market's amount step (never sell or buy more than we have / can pay)."""
    if not step:
        return amount
    # The small epsilon keeps 0.3/0.1 = 2.9999999 from losing a whole step.
    return math.floor(amount / step + 1e-9) * step


def simulate_fill(
    book: Book, action: int, open_price: float, timestamp: int, rules: MarketRules
) -> Fill | None:
    """Apply ``action`` at ``open_price`` to ``book`` (mutated); the fill, or None if nothing traded.

    A buy when already long, a sell when flat, an order under the minimums or an amount that rounds
    to zero do nothing.
    """
    if action == Action.BUY:
        price = open_price * (1 + rules.slippage_bps / 1e4)
        budget = min(book.cash, book.equity(open_price) * rules.position_fraction)
        if book.position > 0 or budget <= 0:
            return None
        amount = round_amount(budget / (price * (1 + rules.fee)), rules.amount_step)
        notional = amount * price
        if amount <= 0 or amount < rules.min_amount or notional < rules.min_notional:
            return None
        fee = notional * rules.fee
        book.cash -= notional + fee
        book.position += amount
        book.entry_price = (notional + fee) / amount
        fill = Fill(timestamp, "buy", price, amount, fee)
    elif action == Action.SELL:
        if book.position <= 0:
            return None
        price = open_price * (1 - rules.slippage_bps / 1e4)
        amount = round_amount(book.position, rules.amount_step)
        notional = amount * price
        if amount <= 0 or amount < rules.min_amount or notional < rules.min_notional:
            return None
        fee = notional * rules.fee
        book.cash += notional - fee
        book.position -= amount
        if book.position <= (rules.amount_step or 0) * 1e-6:
            book.position = 0.0
            book.entry_price = 0.0
        fill = Fill(timestamp, "sell", price, amount, fee)
    else:
        return None
    book.fees_paid += fill.fee
    book.turnover += fill.notional
    book.fills.append(fill)
    return fill


# ccxt's precisionMode constants (ccxt.DECIMAL_PLACES, ccxt.SIGNIFICANT_DIGITS, ccxt.TICK_SIZE),
# repeated here so the fill model does not import ccxt.
DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE = 2, 3, 4


def rules_from_market(market: dict, trading: Any, precision_mode: int = TICK_SIZE) -> MarketRules:
    """MarketRules from a ccxt market structure (``exchange.market(symbol)``) and the trading settings.

    ``trading.fee`` None means the exchange's taker fee from the market info. ``precision_mode``
    is the exchange's ``precisionMode``: most ccxt exchanges give the amount precision as a step
    (TICK_SIZE); a few give a number of decimal places.
    """
    from chartrl.errors import ConfigError

    symbol = market.get("symbol", "?")
    fee = trading.fee
    if fee is None:
        fee = market.get("taker")
        if fee is None:
            raise ConfigError(
                f"trading.fee is empty and market {symbol} reports no taker fee; set trading.fee (e.g. 0.001)"
            )
    precision = (market.get("precision") or {}).get("amount")
    step: float | None = None
    if precision is not None:
        if precision_mode == DECIMAL_PLACES:
            step = 10.0 ** -int(precision)
        elif precision_mode == TICK_SIZE:
            step = float(precision)
        # SIGNIFICANT_DIGITS has no fixed step; amounts are then left unrounded.
    limits = market.get("limits") or {}
    min_amount = (limits.get("amount") or {}).get("min") or 0.0
    min_notional = (limits.get("cost") or {}).get("min") or 0.0
    return MarketRules(
        fee=float(fee),
        slippage_bps=float(trading.slippage_bps),
        amount_step=step if step and step > 0 else None,
        min_amount=float(min_amount),
        min_notional=float(min_notional),
        position_fraction=float(trading.position_fraction),
    )


def rules_from_settings(trading: Any) -> MarketRules:
    """MarketRules when no market info is at hand (backtests offline): config fee (0.1% when empty),
    slippage and sizing; no precision or minimums."""
    return MarketRules(
        fee=0.001 if trading.fee is None else float(trading.fee),
        slippage_bps=float(trading.slippage_bps),
        position_fraction=float(trading.position_fraction),
    )
