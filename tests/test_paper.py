"""Paper account: the backtest fill model on live candles, persisted so a restart continues exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from chartrl.account.base import Candle, SimAccount
from chartrl.account.fills import MarketRules
from chartrl.account.ledger import Ledger
from chartrl.account.paper import PaperAccount
from chartrl.strategies.base import Action

RULES = MarketRules(fee=0.001, slippage_bps=5.0, amount_step=1e-5, min_notional=10.0)


def candles_from(frame) -> list[Candle]:
    return [
        Candle(int(ts.value // 1_000_000), o, h, lo, c, v)
        for ts, o, h, lo, c, v in frame.itertuples(index=False)
    ]


def actions(n: int) -> list[int]:
    import random

    rnd = random.Random(3)
    return [rnd.choice([Action.HOLD, Action.HOLD, Action.BUY, Action.SELL]) for _ in range(n)]


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "ledger.sqlite")
    yield led
    led.close()


def test_paper_equals_backtest_fill_model(ledger: Ledger, candles) -> None:
    cs, acts = candles_from(candles.iloc[:300]), actions(300)
    sim = SimAccount(10_000.0, RULES)
    paper = PaperAccount(ledger, symbol="BTC/USDT", initial_cash=10_000.0, rules=RULES)
    for a, c in zip(acts, cs, strict=True):
        assert sim.execute(a, c) == paper.execute(a, c)
    assert paper.book == sim.book and paper.equity() == sim.equity()
    assert len(ledger.fills("paper")) == len(sim.book.fills) > 10
    assert all(o.state == "filled" for o in ledger.orders("paper"))


def test_restart_continues_with_same_state(tmp_path: Path, candles) -> None:
    cs, acts = candles_from(candles.iloc[:200]), actions(200)
    path = tmp_path / "ledger.sqlite"
    reference = SimAccount(10_000.0, RULES)
    for a, c in zip(acts, cs, strict=True):
        reference.execute(a, c)
    for lo, hi in ((0, 70), (70, 71), (71, 200)):  # two restarts
        with Ledger(path) as led:
            # The configured cash applies to a new account only; afterwards the stored book wins.
            paper = PaperAccount(
                led, symbol="BTC/USDT", initial_cash=10_000.0 if lo == 0 else 999.0, rules=RULES
            )
            for a, c in zip(acts[lo:hi], cs[lo:hi], strict=True):
                paper.execute(a, c)
    with Ledger(path) as led:
        paper = PaperAccount(led, symbol="BTC/USDT", initial_cash=999.0, rules=RULES)
        assert paper.book == reference.book
        assert paper.initial_cash == 10_000.0 and paper.last_price == reference.last_price


def test_replayed_candle_is_not_executed_twice(ledger: Ledger, candles) -> None:
    cs = candles_from(candles.iloc[:3])
    paper = PaperAccount(ledger, symbol="BTC/USDT", initial_cash=10_000.0, rules=RULES)
    assert paper.execute(Action.BUY, cs[1]) is not None
    again = PaperAccount(ledger, symbol="BTC/USDT", initial_cash=10_000.0, rules=RULES)
    assert again.execute(Action.SELL, cs[1]) is None  # same candle after a restart: already done
    assert again.execute(Action.SELL, cs[0]) is None  # older candle
    assert again.position > 0 and len(ledger.fills("paper")) == 1


def test_max_notional_caps_the_buy(ledger: Ledger, candles) -> None:
    c = candles_from(candles.iloc[:1])[0]
    paper = PaperAccount(ledger, symbol="BTC/USDT", initial_cash=10_000.0, rules=RULES)
    fill = paper.execute(Action.BUY, c, max_notional=2_000.0)
    assert fill is not None and 1_990 <= fill.notional + fill.fee <= 2_000.0
    assert paper.rules == RULES  # the cap applied to this fill only


def test_ledger_failure_keeps_memory_equal_to_ledger(ledger: Ledger, candles, monkeypatch) -> None:
    cs = candles_from(candles.iloc[:2])
    paper = PaperAccount(ledger, symbol="BTC/USDT", initial_cash=10_000.0, rules=RULES)

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ledger, "save_paper_book", broken)
    with pytest.raises(OSError):
        paper.execute(Action.BUY, cs[0])
    assert paper.cash == 10_000.0 and paper.position == 0 and paper.last_candle_ms is None
    assert (
        ledger.fills("paper") == [] and ledger.orders("paper") == []
    )  # the fill rolled back with the book
