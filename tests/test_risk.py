"""Each risk limit fires with its named reason; and a clean action passes untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from chartrl.account.ledger import Ledger
from chartrl.account.risk import RiskGuard
from chartrl.config.settings import RiskSettings
from chartrl.strategies.base import Action

HOUR = 3_600_000
DAY0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC
NOW = DAY0 + 10 * HOUR
FRESH = NOW - HOUR  # open time of the candle that just closed


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "ledger.sqlite")
    yield led
    led.close()


def guard(ledger: Ledger, **risk: object) -> RiskGuard:
    return RiskGuard(RiskSettings(**risk), ledger, symbol="BTC/USDT", timeframe="1h", mode="paper")


def check(
    g: RiskGuard,
    action: int,
    equity: float = 1000.0,
    position_value: float = 0.0,
    now: int = NOW,
    **kw: object,
):
    return g.check(
        action,
        candle_ms=kw.pop("candle_ms", FRESH),
        equity=equity,
        position_value=position_value,
        now_ms=now,
        **kw,
    )


def test_clean_action_passes(ledger: Ledger) -> None:
    v = check(guard(ledger), Action.BUY)
    assert (v.action, v.reason, v.allowed, v.max_notional) == (Action.BUY, "ok", True, None)


def test_halt_file_holds(ledger: Ledger, tmp_path: Path) -> None:
    g = guard(ledger)
    assert g.halt_file == tmp_path / "HALT"  # default beside the ledger = <data dir>/HALT
    g.halt_file.touch()
    v = check(g, Action.BUY)
    assert (v.action, v.reason) == (Action.HOLD, "halt_file")
    g.halt_file.unlink()
    assert check(g, Action.BUY).allowed


def test_ledger_halt_holds_until_cleared(ledger: Ledger) -> None:
    g = guard(ledger)
    ledger.set_halt("balance_mismatch", "live")
    assert check(g, Action.SELL, position_value=10).reason == "ledger_halt"
    ledger.clear_halts("op")
    assert check(g, Action.SELL, position_value=10).allowed


def test_stale_data(ledger: Ledger) -> None:
    g = guard(ledger, stale_after_timeframes=2.0)
    assert check(g, Action.BUY, candle_ms=NOW - 3 * HOUR).allowed  # closed 2h ago: at the limit
    v = check(g, Action.BUY, candle_ms=NOW - 3 * HOUR - 1)
    assert (v.action, v.reason) == (Action.HOLD, "stale_data")


def test_stale_data_counts_from_the_calendar_close_of_a_month(ledger: Ledger) -> None:
    """January closes on 1 February, not 30 days after its open (31 January)."""
    g = RiskGuard(
        RiskSettings(stale_after_timeframes=0.02),
        ledger,
        symbol="BTC/USDT",
        timeframe="1M",
        mode="paper",
    )
    january, february = 1_704_067_200_000, 1_706_745_600_000  # 2024-01-01, 2024-02-01 UTC
    assert check(
        g, Action.BUY, candle_ms=january, now=february + HOUR
    ).allowed  # an hour after its close
    v = check(g, Action.BUY, candle_ms=january, now=february + 15 * HOUR)  # 0.02 x 30 days = 14.4 h
    assert (v.action, v.reason) == (Action.HOLD, "stale_data")


def test_daily_loss_stop_buying_latches_for_the_day(ledger: Ledger) -> None:
    g = guard(ledger, max_daily_loss=0.05, on_daily_loss="stop_buying")
    assert check(g, Action.HOLD, equity=1000).allowed  # records the day's start equity
    assert check(g, Action.BUY, equity=960).allowed  # -4%
    v = check(g, Action.BUY, equity=949)
    assert (v.action, v.reason) == (Action.HOLD, "daily_loss_stop_buying")
    assert (
        check(g, Action.SELL, equity=949, position_value=100).action == Action.SELL
    )  # selling is allowed
    assert (
        check(g, Action.BUY, equity=1000).reason == "daily_loss_stop_buying"
    )  # latched even after recovery
    assert check(
        g, Action.BUY, equity=1000, now=NOW + 24 * HOUR, candle_ms=FRESH + 24 * HOUR
    ).allowed  # next day


def test_daily_loss_flatten_sells_the_position(ledger: Ledger) -> None:
    g = guard(ledger, max_daily_loss=0.1, on_daily_loss="flatten", max_orders_per_day=1)
    check(g, Action.HOLD, equity=1000)
    ledger.create_order(
        "x", symbol="BTC/USDT", mode="paper", side="buy", amount=1, created_ms=NOW
    )  # order cap reached
    v = check(g, Action.HOLD, equity=850, position_value=800)
    assert (v.action, v.reason) == (Action.SELL, "daily_loss_flatten")
    v = check(g, Action.BUY, equity=850, position_value=0)
    assert (v.action, v.reason) == (Action.HOLD, "daily_loss_flatten")


def test_max_orders_per_day(ledger: Ledger) -> None:
    g = guard(ledger, max_orders_per_day=2)
    ledger.create_order(
        "y", symbol="BTC/USDT", mode="paper", side="buy", amount=1, created_ms=DAY0 - 1
    )  # yesterday
    ledger.create_order(
        "a", symbol="BTC/USDT", mode="paper", side="buy", amount=1, created_ms=DAY0 + 1
    )
    ledger.create_order(
        "r",
        symbol="BTC/USDT",
        mode="paper",
        side="buy",
        amount=1,
        created_ms=DAY0 + 2,
        state="rejected",
    )
    ledger.create_order(
        "o", symbol="BTC/USDT", mode="live", side="buy", amount=1, created_ms=DAY0 + 2
    )  # other mode
    assert check(g, Action.SELL, position_value=5).allowed
    ledger.create_order(
        "b", symbol="BTC/USDT", mode="paper", side="sell", amount=1, created_ms=DAY0 + 3
    )
    v = check(g, Action.SELL, position_value=5)
    assert (v.action, v.reason) == (Action.HOLD, "max_orders_per_day")
    assert check(g, Action.HOLD).allowed


def test_max_position_value_caps_then_refuses(ledger: Ledger) -> None:
    g = guard(ledger, max_position_value=500.0)
    v = check(g, Action.BUY, equity=1000, position_value=100, buy_budget=900)
    assert (v.action, v.reason, v.max_notional) == (Action.BUY, "max_position_value_capped", 400.0)
    v = check(g, Action.BUY, equity=1000, position_value=100, buy_budget=300)
    assert (v.reason, v.max_notional) == ("ok", 400.0)
    v = check(g, Action.BUY, equity=1000, position_value=500)
    assert (v.action, v.reason) == (Action.HOLD, "max_position_value")


@pytest.fixture
def logs_restored():
    """Tests that point logging at a captured stream put it back on one that stays open."""
    yield
    import io

    from chartrl.logs import configure_logging

    configure_logging("info", "json", stream=io.StringIO())


def test_verdict_is_logged(ledger: Ledger, logs_restored: None) -> None:
    import io

    from chartrl.logs import configure_logging

    buf = io.StringIO()
    configure_logging("info", "json", stream=buf)
    g = guard(ledger)
    g.halt_file.touch()
    check(g, Action.BUY)
    out = buf.getvalue()
    assert '"reason": "halt_file"' in out and '"event": "risk_check"' in out


def test_halt_cli_set_show_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], logs_restored: None
) -> None:
    """`chartrl halt set|show|clear` drive the same halts the risk guard reads."""
    from chartrl.cli import main

    def run(*argv: str) -> int:
        with pytest.raises(SystemExit) as exc:
            main(["--log-format", "json", "halt", *argv])
        return exc.value.code

    data = tmp_path / "data"  # conftest points CHARTRL_DATA_DIR here
    assert run("show") == 0 and run("show", "--check") == 0
    assert run("set", "deposit in progress") == 0
    assert run("show") == 0  # it answered: halted is not an error
    assert (
        run("show", "--check") == 3
    )  # for scripts: 3 = halted, distinct from 1 (error) and 2 (usage)
    assert "deposit in progress" in capsys.readouterr().out
    with Ledger(data / "ledger.sqlite") as led:
        g = guard(led)
        assert g.halted() == "ledger_halt"
        (data / "HALT").touch()
        assert g.halted() == "halt_file"
        assert run("clear", "--keep-file") == 0
        assert g.halted() == "halt_file" and led.active_halts() == []
        assert run("clear") == 0
        assert g.halted() is None
    assert run("show") == 0
