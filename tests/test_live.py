"""Live account against the loopback emulator: refusal, the order protocol, ambiguity, partial fills, balances."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from chartrl.account import ccxt_errors
from chartrl.account.base import Candle
from chartrl.account.ledger import Ledger
from chartrl.account.live import LiveAccount, require_live
from chartrl.account.risk import RiskGuard
from chartrl.config.settings import ExchangeSettings, RiskSettings, Settings, TradingSettings
from chartrl.errors import ConfigError, OperationalError, TemporaryError, TradingHalted, UsageError
from chartrl.strategies.base import Action
from chartrl.testing.exchange_sim import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    ExchangeSim,
    SymbolRules,
)
from chartrl.testing.synthetic import synthetic_candles

CANDLES = synthetic_candles(120, seed=5)


def live_settings(
    url: str = "http://127.0.0.1:9",
    grace: float = 0.0,
    key: str | None = DEFAULT_API_KEY,
    secret: str | None = DEFAULT_API_SECRET,
    timeout_ms: int = 10_000,
    mode: str = "live",
) -> Settings:
    return Settings(
        exchange=ExchangeSettings(
            api_url=url, api_key=key, api_secret=secret, timeout_ms=timeout_ms
        ),
        trading=TradingSettings(
            mode=mode, order_lookup_grace_seconds=grace, order_lost_deadline_seconds=0
        ),
    )


def last_candle() -> Candle:
    r = CANDLES.iloc[-1]
    return Candle(int(r.timestamp.value // 1_000_000), r.open, r.high, r.low, r.close, r.volume)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "ledger.sqlite")
    yield led
    led.close()


def make_sim(**kw) -> ExchangeSim:
    return ExchangeSim(CANDLES, **kw)


def account(sim: ExchangeSim, ledger: Ledger, **kw) -> LiveAccount:
    acc = LiveAccount(
        live_settings(sim.url, **kw), ledger, live=True, sleep=lambda s: time.sleep(min(s, 0.05))
    )
    acc.start()
    return acc


def assert_ledger_equals_exchange(ledger: Ledger, sim: ExchangeSim) -> None:
    """Every exchange order is a ledger order with the same fills, and balances agree exactly."""
    remote = {o["clientOrderId"]: o for o in sim.orders()}
    local = {o.client_order_id: o for o in ledger.orders("live") if o.state != "rejected"}
    assert set(remote) == set(local)
    for cid, o in remote.items():
        assert local[cid].exchange_order_id == str(o["orderId"])
        assert Decimal(str(local[cid].filled)) == Decimal(o["executedQty"])
        assert (
            local[cid].state
            == {"FILLED": "filled", "PARTIALLY_FILLED": "partially_filled", "NEW": "open"}[
                o["status"]
            ]
        )
    assert sorted(f.trade_id for f in ledger.fills("live")) == sorted(
        str(t["id"]) for t in sim.trades()
    )
    base = quote = Decimal(0)
    for f in ledger.fills("live"):
        sign = 1 if f.side == "buy" else -1
        base += sign * Decimal(str(f.amount)) - (
            Decimal(str(f.fee)) if f.fee_currency == "BTC" else 0
        )
        quote -= sign * Decimal(str(f.cost)) + (
            Decimal(str(f.fee)) if f.fee_currency == "USDT" else 0
        )
    bal = sim.balances()
    assert abs(float(base) - bal.get("BTC", 0.0)) < 1e-9
    assert abs(10_000 + float(quote) - bal["USDT"]) < 1e-6


# -- refusal ------------------------------------------------------------------------------------------
def test_refuses_paper_mode_and_missing_flag_and_missing_keys() -> None:
    with pytest.raises(UsageError, match='mode = "live"'):
        require_live(live_settings(mode="paper"), live=True)
    with pytest.raises(UsageError, match="--live"):
        require_live(live_settings(), live=False)
    with pytest.raises(ConfigError) as err:
        require_live(live_settings(key=None, secret=None), live=True)
    assert "exchange.api_key" in str(err.value) and "exchange.api_secret" in str(err.value)
    with pytest.raises(ConfigError, match="api_secret") as err:
        require_live(live_settings(secret=None), live=True)
    assert "api_key" not in str(err.value).replace("exchange.api_secret", "")


def test_live_account_constructor_refuses_without_flag(ledger: Ledger) -> None:
    with pytest.raises(UsageError):
        LiveAccount(live_settings(), ledger)  # live defaults to False
    assert ledger.orders() == []


# -- the order protocol ------------------------------------------------------------------------------
def test_buy_then_sell_records_everything(ledger: Ledger) -> None:
    with make_sim() as sim:
        acc = account(sim, ledger)
        fill = acc.execute(Action.BUY, last_candle())
        assert fill is not None and fill.side == "buy"
        step = Decimal("0.00001")
        amount = Decimal(str(ledger.orders("live")[0].amount))
        assert amount % step == 0  # rounded to the market precision before sending
        assert acc.execute(Action.BUY, last_candle()) is None  # already long: nothing sent
        assert acc.execute(Action.SELL, last_candle()).side == "sell"
        assert len(sim.orders()) == 2
        assert_ledger_equals_exchange(ledger, sim)
        assert acc.check_balances().ok


def test_partial_fills_recorded_as_reported(ledger: Ledger) -> None:
    with make_sim(partial_fills=3) as sim:
        acc = account(sim, ledger)
        fill = acc.execute(Action.BUY, last_candle())
        assert fill is not None
        order = ledger.orders("live")[0]
        assert (
            order.state == "filled"
            and len(ledger.fills(client_order_id=order.client_order_id)) == 3
        )
        assert fill.amount == pytest.approx(order.filled)
        assert_ledger_equals_exchange(ledger, sim)


def test_ambiguous_submit_dropped_response_gives_exactly_one_order(ledger: Ledger) -> None:
    with make_sim() as sim:
        acc = account(sim, ledger, grace=30)
        sim.faults.add("/api/v3/order", "drop_response", method="POST")
        fill = acc.execute(Action.BUY, last_candle())
        assert fill is not None  # found by its client id
        assert len(sim.orders()) == 1 and len(ledger.orders("live")) == 1
        assert_ledger_equals_exchange(ledger, sim)


@pytest.mark.parametrize("kind", ["500", "503", "429"])
def test_error_after_processing_is_looked_up_not_resent(ledger: Ledger, kind: str) -> None:
    with make_sim() as sim:
        acc = account(sim, ledger, grace=30)
        sim.faults.add("/api/v3/order", kind, method="POST", process=True)
        assert acc.execute(Action.BUY, last_candle()) is not None
        assert len(sim.orders()) == 1
        assert_ledger_equals_exchange(ledger, sim)


def test_reset_before_processing_is_declared_never_arrived_after_grace(ledger: Ledger) -> None:
    with make_sim() as sim:
        acc = account(sim, ledger, grace=0)
        sim.faults.add("/api/v3/order", "reset", method="POST")
        assert acc.execute(Action.BUY, last_candle()) is None
        (order,) = ledger.orders("live")
        assert order.state == "rejected" and "never arrived" in order.error
        assert sim.orders() == []
        assert (
            acc.execute(Action.BUY, last_candle()) is not None
        )  # a new decision sends a new order
        assert len(sim.orders()) == 1


def test_delayed_request_is_not_given_up_within_grace(ledger: Ledger) -> None:
    """A timeout whose request lands later: unknown until found, never re-sent, no new order meanwhile."""
    with make_sim() as sim:
        acc = LiveAccount(live_settings(sim.url, grace=30, timeout_ms=300), ledger, live=True)
        acc.start()
        sim.faults.add("/api/v3/order", "timeout", method="POST", ms=1200)
        with pytest.raises(TemporaryError, match="never re-sent"):
            acc.execute(Action.BUY, last_candle())
        assert ledger.orders("live")[0].state == "unknown"
        with pytest.raises(TemporaryError, match="unresolved"):
            acc.execute(Action.BUY, last_candle())
        deadline = time.time() + 10
        while not sim.orders() and time.time() < deadline:
            time.sleep(0.05)
        assert acc.reconcile() == []
        assert (
            acc.execute(Action.BUY, last_candle()) is None
        )  # already long: the delayed order filled
        assert len(sim.orders()) == 1
        assert_ledger_equals_exchange(ledger, sim)


def test_restart_reconciles_pending_orders(tmp_path: Path) -> None:
    """Killed between recording and sending, and between sending and recording: both resolved on start."""
    with make_sim() as sim:
        led = Ledger(tmp_path / "ledger.sqlite")
        acc = account(sim, led)
        # Sent but never recorded: a pending order the exchange has.
        led.create_order("crl-sent", symbol="BTC/USDT", mode="live", side="buy", amount=0.01)
        acc.exchange.create_order(
            "BTC/USDT", "market", "buy", 0.01, None, {"newClientOrderId": "crl-sent"}
        )
        # Recorded but never sent.
        led.create_order("crl-unsent", symbol="BTC/USDT", mode="live", side="buy", amount=0.01)
        led.close()
        led = Ledger(tmp_path / "ledger.sqlite")
        account(sim, led)
        assert led.order("crl-sent").state == "filled"
        assert led.order("crl-unsent").state == "rejected"
        assert_ledger_equals_exchange(led, sim)
        led.close()


# -- limits and errors -----------------------------------------------------------------------------
def test_min_notional_and_min_amount_skip_without_sending(ledger: Ledger, tmp_path: Path) -> None:
    with make_sim(balances={"USDT": 4.0}) as sim:  # min notional is 5
        acc = account(sim, ledger)
        assert acc.execute(Action.BUY, last_candle()) is None
        assert ledger.orders("live") == [] and sim.orders() == []
    rules = SymbolRules(
        min_qty=Decimal("0.01"), step_size=Decimal("0.01"), min_notional=Decimal("1")
    )
    with (
        make_sim(balances={"USDT": 50.0}, rules=rules) as sim,
        Ledger(tmp_path / "other.sqlite") as other,
    ):
        acc = account(sim, other)  # 50 USDT buys < 0.01 BTC
        assert acc.execute(Action.BUY, last_candle()) is None
        assert sim.orders() == []


def test_insufficient_funds_on_a_buy_is_a_refusal_and_the_withdrawal_then_halts(
    ledger: Ledger,
) -> None:
    with make_sim() as sim:
        acc = account(sim, ledger)

        def withdraw(point: str) -> None:  # funds leave between our balance check and the send
            if point == "order_recorded":
                sim.engine.free["USDT"] = Decimal("1")

        acc.on_point = withdraw
        # The buy is refused (issue 12, item 6: a price move past the headroom is no reason to stop).
        assert acc.execute(Action.BUY, last_candle()) is None
        assert ledger.orders("live")[0].state == "rejected"
        assert ledger.active_halts() == []
        # What did stop trading is the withdrawal, which the next balance check sees.
        acc.on_point = lambda _p: None
        with pytest.raises(OperationalError, match="balance_mismatch"):
            acc.execute(Action.HOLD, last_candle())
        assert [h.reason for h in ledger.active_halts()] == ["balance_mismatch"]
        guard = RiskGuard(RiskSettings(), ledger, symbol="BTC/USDT", timeframe="1h", mode="live")
        assert guard.halted() == "ledger_halt"


def test_balance_mismatch_halts_until_cleared(ledger: Ledger) -> None:
    with make_sim() as sim:
        acc = account(sim, ledger)
        acc.execute(Action.BUY, last_candle())
        sim.engine.free["USDT"] -= Decimal("100")  # a withdrawal chartrl did not make
        with pytest.raises(OperationalError, match="balance_mismatch"):
            account(sim, ledger)
        assert ledger.active_halts()[0].reason == "balance_mismatch"
        with pytest.raises(OperationalError):  # still halted on the next start, one halt record
            account(sim, ledger)
        assert len(ledger.active_halts()) == 1
        ledger.clear_halts("operator")
        acc = account(sim, ledger)  # re-baselined
        assert acc.check_balances().ok and ledger.active_halts() == []


def test_bad_keys_are_operational_and_never_logged(ledger: Ledger) -> None:
    import io

    from chartrl.config import load_settings
    from chartrl.logs import configure_logging

    buf = io.StringIO()
    configure_logging("debug", "json", stream=buf)
    with make_sim() as sim:
        secret = "wrong-secret-XYZ123"
        env = {
            "CHARTRL__EXCHANGE__API_KEY": DEFAULT_API_KEY,
            "CHARTRL__EXCHANGE__API_SECRET": secret,
            "CHARTRL__EXCHANGE__API_URL": sim.url,
            "CHARTRL__TRADING__MODE": "live",
        }
        settings = load_settings(env=env)  # registers the secrets for redaction
        acc = LiveAccount(settings, ledger, live=True)
        with pytest.raises(OperationalError) as err:
            acc.start()
            acc.execute(Action.BUY, last_candle())
        assert secret not in str(err.value)
    out = buf.getvalue()
    assert (
        "AuthenticationError" in out or "signature" in out.lower()
    )  # the failure itself was logged
    assert secret not in out and DEFAULT_API_KEY not in out


# -- error mapping ---------------------------------------------------------------------------------
def test_ccxt_error_mapping() -> None:
    import ccxt

    for cls in (
        ccxt.NetworkError,
        ccxt.RequestTimeout,
        ccxt.ExchangeNotAvailable,
        ccxt.RateLimitExceeded,
        ccxt.DDoSProtection,
        ccxt.OnMaintenance,
        ccxt.InvalidNonce,
        ccxt.BadResponse,
    ):
        assert isinstance(ccxt_errors.translate(cls("x"), "op"), TemporaryError), cls
        assert ccxt_errors.is_ambiguous(cls("x"))
    hints = {
        ccxt.InsufficientFunds: "insufficient funds",
        ccxt.AuthenticationError: "API key/secret",
        ccxt.PermissionDenied: "permission",
        ccxt.AccountSuspended: "suspended",
        ccxt.InvalidOrder: "refused the order",
        ccxt.BadSymbol: "symbol",
        ccxt.ExchangeError: "refused the request",
    }
    for cls, hint in hints.items():
        err = ccxt_errors.translate(cls("x"), "op")
        assert isinstance(err, OperationalError) and hint in str(err), cls
        assert not ccxt_errors.is_ambiguous(cls("x"))
    assert ccxt_errors.is_not_found(ccxt.OrderNotFound("x")) and not ccxt_errors.is_not_found(
        ccxt.InvalidOrder("x")
    )
    with pytest.raises(TemporaryError):
        ccxt_errors.call(lambda: (_ for _ in ()).throw(ccxt.RequestTimeout("slow")), what="fetch")


def test_open_order_unknown_to_the_ledger_halts(ledger: Ledger) -> None:
    """An open chartrl order the ledger never heard of (ledger restored from a backup?) stops trading."""
    with make_sim() as sim:
        acc = account(sim, ledger)
        price = last_candle().open
        acc.exchange.create_order(
            "BTC/USDT",
            "limit",
            "buy",
            0.01,
            round(price * 0.5, 2),
            {"newClientOrderId": "crl-stranger"},
        )
        acc.exchange.create_order(
            "BTC/USDT",
            "limit",
            "buy",
            0.01,
            round(price * 0.5, 2),
            {"newClientOrderId": "manual-1"},
        )
        with pytest.raises(OperationalError, match="crl-stranger"):
            account(sim, ledger)
        assert [h.reason for h in ledger.active_halts()] == ["unknown_order"]


def test_lagging_trade_list_keeps_order_open_until_complete(ledger: Ledger) -> None:
    with make_sim() as sim:
        acc = account(sim, ledger)
        real_create, real_trades = acc.exchange.create_order, acc.exchange.fetch_order_trades
        calls = {"n": 0}

        def create_without_trades(*a, **k):
            return {**real_create(*a, **k), "trades": []}

        def lagging_trades(*a, **k):
            calls["n"] += 1
            return [] if calls["n"] == 1 else real_trades(*a, **k)

        acc.exchange.create_order, acc.exchange.fetch_order_trades = (
            create_without_trades,
            lagging_trades,
        )
        fill = acc.execute(Action.BUY, last_candle())
        assert calls["n"] >= 2 and fill is not None
        assert ledger.orders("live")[0].state == "filled"
        assert_ledger_equals_exchange(ledger, sim)


def test_entry_price_and_position_features_after_a_buy(ledger: Ledger) -> None:
    with make_sim() as sim:
        acc = account(sim, ledger)
        fill = acc.execute(Action.BUY, last_candle())
        is_long, ret = acc.position_features(fill.price)
        # Bought at fill.price with the fee taken in BTC: the entry cost is the price grossed up by the fee.
        assert is_long == 1.0 and ret == pytest.approx(-0.001, abs=2e-4)
        assert acc.equity(fill.price) == pytest.approx(10_000 - fill.fee, rel=1e-6)


def test_dust_left_by_fees_reads_as_flat(ledger: Ledger) -> None:
    # The emulator takes a buy's fee in BTC, so selling the free amount rounded to the lot step leaves dust.
    with make_sim() as sim:
        acc = account(sim, ledger)
        acc.execute(Action.BUY, last_candle())
        fill = acc.execute(Action.SELL, last_candle())
        assert fill is not None and sim.balances().get("BTC", 0.0) > 0  # dust is really there
        assert acc.position_features(fill.price) == (
            0.0,
            0.0,
        )  # ...but the policy sees a flat account
        assert acc.execute(Action.BUY, last_candle()) is not None  # and can buy again


def test_start_prices_the_position_and_the_baseline(ledger: Ledger) -> None:
    """A restarted account values its position before any order (the STATUS= line), and the baseline
    keeps what it was worth when it was taken."""
    with make_sim() as sim:
        acc = account(sim, ledger)
        assert acc.last_price is not None
        acc.execute(Action.BUY, last_candle())
        again = account(sim, ledger)  # a restart: no order yet
        assert again.position > 0 and again.last_price is not None
        assert again.equity() == pytest.approx(again.cash + again.position * again.last_price)
        assert again.equity() > again.cash + 1000
    rows = ledger._query("SELECT symbol, equity FROM balances WHERE kind = 'baseline'")
    assert [(r["symbol"], r["equity"]) for r in rows] == [("BTC/USDT", 10_000.0)]


def test_an_order_after_a_halt_reconciles_everything_first(ledger: Ledger) -> None:
    """After `chartrl halt clear` the next order starts the account again (open orders included)."""
    with make_sim() as sim:
        acc = account(sim, ledger)
        sim.engine.free["USDT"] -= Decimal("100")  # a withdrawal chartrl did not make
        with pytest.raises(TradingHalted, match="balance_mismatch"):
            acc.execute(Action.BUY, last_candle())
        assert not acc.started and sim.orders() == []
        price = last_candle().open  # meanwhile an order chartrl's ledger does not know appears
        acc.exchange.create_order(
            "BTC/USDT",
            "limit",
            "buy",
            0.01,
            round(price * 0.5, 2),
            {"newClientOrderId": "crl-stranger"},
        )
        ledger.clear_halts("operator")
        with pytest.raises(TradingHalted, match="crl-stranger"):
            acc.execute(Action.BUY, last_candle())
        assert [h.reason for h in ledger.active_halts()] == ["unknown_order"] and len(
            sim.orders()
        ) == 1
