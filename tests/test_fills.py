"""The shared fill model: fees, slippage, minimums, precision and sizing, worked out by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from chartrl.account.base import Candle, SimAccount
from chartrl.account.fills import (
    DECIMAL_PLACES,
    Book,
    MarketRules,
    round_amount,
    rules_from_market,
    rules_from_settings,
    simulate_fill,
)
from chartrl.errors import ConfigError
from chartrl.strategies.base import Action

BUY, SELL, HOLD = int(Action.BUY), int(Action.SELL), int(Action.HOLD)


def test_buy_pays_fee_and_slippage_on_the_fill_price() -> None:
    book = Book(cash=1000.0)
    fill = simulate_fill(book, BUY, 100.0, 1, MarketRules(fee=0.001, slippage_bps=10))
    # 10 bps against us: 100.1. All-in with the fee on top: amount * 100.1 * 1.001 = 1000.
    assert fill is not None and fill.side == "buy"
    assert fill.price == pytest.approx(100.1)
    assert fill.amount == pytest.approx(1000 / 100.2001)
    assert fill.fee == pytest.approx(1000 / 1.001 * 0.001)
    assert book.cash == pytest.approx(0.0, abs=1e-9)
    assert book.position == pytest.approx(9.980029960)
    assert book.entry_price == pytest.approx(100.2001)  # cost per unit including the fee
    assert book.fees_paid == pytest.approx(0.999000999)


def test_round_trip_by_hand() -> None:
    book = Book(cash=1000.0)
    rules = MarketRules(fee=0.001, slippage_bps=10)
    simulate_fill(book, BUY, 100.0, 1, rules)
    fill = simulate_fill(book, SELL, 110.0, 2, rules)
    assert fill is not None and fill.side == "sell"
    assert fill.price == pytest.approx(109.89)  # 110 less 10 bps
    amount = 1000 / 100.2001
    assert fill.fee == pytest.approx(amount * 109.89 * 0.001)
    assert book.cash == pytest.approx(amount * 109.89 * 0.999)
    assert book.cash == pytest.approx(1095.608787, abs=1e-5)  # 9.98003 units * 109.89 less 0.1 %
    assert book.position == 0.0 and book.entry_price == 0.0
    assert book.turnover == pytest.approx(1000 / 1.001 + amount * 109.89)
    assert len(book.fills) == 2


def test_amount_precision_rounds_down_to_the_step() -> None:
    book = Book(cash=1000.0)
    fill = simulate_fill(
        book, BUY, 100.0, 1, MarketRules(fee=0.001, slippage_bps=0, amount_step=0.01)
    )
    # 1000 / 100.1 = 9.99000999 -> 9.99; notional 999, fee 0.999, cash left 0.001.
    assert fill is not None
    assert fill.amount == pytest.approx(9.99)
    assert book.cash == pytest.approx(0.001)
    assert round_amount(0.3, 0.1) == pytest.approx(0.3)  # float noise does not lose a step
    assert round_amount(0.29999, 0.1) == pytest.approx(0.2)
    assert round_amount(1.2345, None) == 1.2345


def test_minimum_notional_and_amount_refuse_small_orders() -> None:
    book = Book(cash=5.0)
    assert (
        simulate_fill(book, BUY, 100.0, 1, MarketRules(fee=0.0, slippage_bps=0, min_notional=10.0))
        is None
    )
    assert book.cash == 5.0 and book.position == 0.0 and book.fills == []
    assert (
        simulate_fill(book, BUY, 100.0, 1, MarketRules(fee=0.0, slippage_bps=0, min_amount=0.1))
        is None
    )
    # 5 quote buys 0.05 units: above a 0.01 minimum, so it fills.
    assert (
        simulate_fill(book, BUY, 100.0, 1, MarketRules(fee=0.0, slippage_bps=0, min_amount=0.01))
        is not None
    )
    assert book.position == pytest.approx(0.05)
    # A position worth 4.5 cannot be sold under a 5.0 minimum notional: it stays.
    assert (
        simulate_fill(book, SELL, 90.0, 2, MarketRules(fee=0.0, slippage_bps=0, min_notional=5.0))
        is None
    )
    assert book.position == pytest.approx(0.05)


def test_amount_that_rounds_to_zero_does_nothing() -> None:
    book = Book(cash=0.5)
    assert (
        simulate_fill(book, BUY, 100.0, 1, MarketRules(fee=0.0, slippage_bps=0, amount_step=0.01))
        is None
    )
    assert book.cash == 0.5


def test_no_pyramiding_no_short_and_hold_is_free() -> None:
    book = Book(cash=100.0)
    rules = MarketRules(fee=0.001, slippage_bps=5)
    assert simulate_fill(book, SELL, 100.0, 1, rules) is None  # flat: nothing to sell (long-only)
    assert simulate_fill(book, HOLD, 100.0, 1, rules) is None
    assert simulate_fill(book, BUY, 100.0, 1, rules) is not None
    cash, pos = book.cash, book.position
    assert simulate_fill(book, BUY, 90.0, 2, rules) is None  # already long
    assert (book.cash, book.position) == (cash, pos)


def test_fixed_fraction_sizing_invests_that_share_of_equity() -> None:
    book = Book(cash=1000.0)
    fill = simulate_fill(
        book, BUY, 50.0, 1, MarketRules(fee=0.0, slippage_bps=0, position_fraction=0.25)
    )
    assert fill is not None
    assert fill.amount == pytest.approx(5.0)  # 250 / 50
    assert book.cash == pytest.approx(750.0)
    assert book.equity(60.0) == pytest.approx(750.0 + 300.0)


def test_sim_account_fills_at_the_open_and_marks_at_the_close() -> None:
    acc = SimAccount(1000.0, MarketRules(fee=0.0, slippage_bps=0))
    fill = acc.execute(BUY, Candle(0, open=100.0, high=130.0, low=90.0, close=120.0, volume=1.0))
    assert fill is not None and fill.price == 100.0 and acc.position == pytest.approx(10.0)
    assert acc.equity() == pytest.approx(1200.0)
    assert acc.last_reward == pytest.approx(math.log(1.2))
    assert acc.position_features() == (1.0, pytest.approx(math.log(1.2)))


BINANCE_LIKE = {
    "symbol": "BTC/USDT",
    "taker": 0.00075,
    "maker": 0.0005,
    "precision": {"amount": 1e-05, "price": 0.01},
    "limits": {"amount": {"min": 1e-05, "max": 9000.0}, "cost": {"min": 5.0, "max": None}},
}


def _trading(fee: float | None = 0.001) -> SimpleNamespace:
    return SimpleNamespace(fee=fee, slippage_bps=3.0, position_fraction=0.5)


def test_rules_from_market_reads_fee_step_and_minimums() -> None:
    r = rules_from_market(BINANCE_LIKE, _trading(None))
    assert r == MarketRules(
        fee=0.00075,
        slippage_bps=3.0,
        amount_step=1e-05,
        min_amount=1e-05,
        min_notional=5.0,
        position_fraction=0.5,
    )
    # A configured fee wins over the exchange's.
    assert rules_from_market(BINANCE_LIKE, _trading(0.002)).fee == 0.002


def test_rules_from_market_decimal_places_and_missing_fields() -> None:
    market = {
        "symbol": "BTC/KRW",
        "taker": 0.0025,
        "precision": {"amount": 8},
        "limits": {"cost": {"min": 5000}},
    }
    r = rules_from_market(market, _trading(None), precision_mode=DECIMAL_PLACES)
    assert r.amount_step == pytest.approx(1e-08)
    assert r.min_notional == 5000.0 and r.min_amount == 0.0
    with pytest.raises(ConfigError, match="trading.fee is empty.*BTC/EUR"):
        rules_from_market({"symbol": "BTC/EUR"}, _trading(None))


def test_rules_from_settings_defaults_the_fee() -> None:
    assert rules_from_settings(_trading(None)).fee == 0.001
    assert rules_from_settings(_trading(0.0)).fee == 0.0
