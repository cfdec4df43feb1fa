"""The loopback Binance emulator, exercised through an unmodified ccxt.binance (make_exchange)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import ccxt
import pandas as pd
import pytest

from chartrl.config.settings import ExchangeSettings
from chartrl.errors import ConfigError
from chartrl.market.exchange import make_exchange
from chartrl.testing.exchange_sim import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    ExchangeSim,
    FaultPlan,
    SimClock,
)
from chartrl.testing.synthetic import synthetic_candles

HOUR = 3_600_000
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_candles(2600, seed=5)


def open_ms(frame: pd.DataFrame, i: int) -> int:
    return int(frame["timestamp"].iloc[i].value // 1_000_000)


def client(
    sim: ExchangeSim,
    timeout_ms: int = 10_000,
    key: str = DEFAULT_API_KEY,
    secret: str = DEFAULT_API_SECRET,
):
    return make_exchange(
        ExchangeSettings(
            id="binance", api_url=sim.url, api_key=key, api_secret=secret, timeout_ms=timeout_ms
        )
    )


@pytest.fixture
def sim(frame: pd.DataFrame):
    with ExchangeSim(frame, balances={"USDT": 10_000}) as s:
        yield s


@pytest.fixture
def ex(sim: ExchangeSim):
    e = client(sim)
    e.load_markets()
    return e


# -- public endpoints ---------------------------------------------------------------------------


def test_load_markets_has_binance_precision_and_limits(ex) -> None:
    m = ex.market("BTC/USDT")
    assert m["id"] == "BTCUSDT" and m["spot"] and m["active"]
    assert m["precision"]["amount"] == pytest.approx(0.00001)
    assert m["precision"]["price"] == pytest.approx(0.01)
    assert m["limits"]["amount"]["min"] == pytest.approx(0.00001)
    assert m["limits"]["cost"]["min"] == pytest.approx(5.0)
    assert ex.amount_to_precision("BTC/USDT", 0.0123456) == "0.01234"


def test_fetch_time_is_the_sim_clock(sim: ExchangeSim, ex, frame: pd.DataFrame) -> None:
    assert sim.clock.now_ms() == open_ms(frame, -1) + 1000  # default: just after the last open
    sim.clock.set(open_ms(frame, 100) + 123)
    assert ex.fetch_time() == open_ms(frame, 100) + 123
    sim.clock.advance(HOUR)
    assert ex.fetch_time() == open_ms(frame, 101) + 123


def test_fetch_ohlcv_pages_through_history_respecting_since_and_limit(
    sim: ExchangeSim, ex, frame: pd.DataFrame
) -> None:
    rows, since, pages = [], open_ms(frame, 0), 0
    while True:
        page = ex.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=1000)
        pages += 1
        rows += page
        if len(page) < 1000:
            break
        since = page[-1][0] + HOUR
    assert pages == 3 and len(rows) == len(frame)
    assert [r[0] for r in rows] == [open_ms(frame, i) for i in range(len(frame))]
    assert rows[10][1:5] == pytest.approx(frame.iloc[10][["open", "high", "low", "close"]].tolist())
    # since between two opens: the first candle opened at or after it; limit respected
    page = ex.fetch_ohlcv("BTC/USDT", "1h", since=open_ms(frame, 50) + 1, limit=7)
    assert [r[0] for r in page] == [open_ms(frame, i) for i in range(51, 58)]
    assert [("GET", "/api/v3/klines")] == list(
        {(m, p) for m, p, q in sim.requests if q.get("limit") == "7"}
    )


def test_klines_follow_binance_semantics(sim: ExchangeSim, ex, frame: pd.DataFrame) -> None:
    base = {"symbol": "BTCUSDT", "interval": "1h"}
    latest = ex.publicGetKlines({**base, "limit": 3})
    assert [k[0] for k in latest] == [open_ms(frame, i) for i in (-3, -2, -1)]
    ending = ex.publicGetKlines({**base, "endTime": open_ms(frame, 20), "limit": 3})
    assert [k[0] for k in ending] == [open_ms(frame, i) for i in (18, 19, 20)]
    window = ex.publicGetKlines(
        {**base, "startTime": open_ms(frame, 5), "endTime": open_ms(frame, 8)}
    )
    assert [k[0] for k in window] == [open_ms(frame, i) for i in range(5, 9)]
    assert ending[0][6] == open_ms(frame, 18) + HOUR - 1  # close time
    with pytest.raises(ccxt.BadRequest):
        ex.publicGetKlines({**base, "limit": 1001})
    with pytest.raises(ccxt.BadRequest):
        ex.publicGetKlines({**base, "interval": "4h"})
    with pytest.raises(ccxt.BadSymbol):
        ex.publicGetKlines({**base, "symbol": "ETHUSDT"})


def test_only_opened_candles_are_served_and_the_last_is_still_forming(
    sim: ExchangeSim, ex, frame: pd.DataFrame
) -> None:
    k = 1200
    sim.clock.set(open_ms(frame, k) + HOUR // 2)
    rows = ex.fetch_ohlcv("BTC/USDT", "1h", since=open_ms(frame, k - 5), limit=100)
    assert rows[-1][0] == open_ms(frame, k)  # nothing from the future
    assert rows[-2][1:6] == pytest.approx(
        frame.iloc[k - 1][["open", "high", "low", "close", "volume"]].tolist()
    )
    o, hi, lo, c, v = rows[-1][1:6]
    full = frame.iloc[k]
    assert o == pytest.approx(full["open"])
    assert full["low"] - 1e-6 <= lo <= hi <= full["high"] + 1e-6
    assert lo <= c <= hi and c != pytest.approx(full["close"])
    assert v == pytest.approx(full["volume"] / 2, rel=1e-6)
    sim.clock.set(open_ms(frame, k + 1))  # the hour is over: the candle is final
    done = ex.fetch_ohlcv("BTC/USDT", "1h", since=open_ms(frame, k), limit=1)[0]
    assert done[1:6] == pytest.approx(full[["open", "high", "low", "close", "volume"]].tolist())


def test_accelerated_clock_runs_and_manual_clock_stands_still() -> None:
    manual = SimClock(1_000)
    fast = SimClock(1_000, speed=100_000)
    time.sleep(0.02)
    assert manual.now_ms() == 1_000
    assert fast.now_ms() > 1_000
    assert manual.advance(500) == 1_500
    with pytest.raises(ValueError):
        SimClock(0, speed=0)


def test_candles_that_do_not_fit_the_timeframe_are_refused(frame: pd.DataFrame) -> None:
    from chartrl.errors import DataError

    with pytest.raises(DataError, match="not 4h apart"):
        ExchangeSim(frame, timeframe="4h")
    with pytest.raises(DataError, match="ascending"):
        ExchangeSim(frame.iloc[::-1].reset_index(drop=True))


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("429", ccxt.DDoSProtection),
        ("418", ccxt.DDoSProtection),
        ("500", ccxt.ExchangeNotAvailable),
        ("503", ccxt.ExchangeNotAvailable),
        ("timeout", ccxt.RequestTimeout),
        ("reset", ccxt.NetworkError),
    ],
)
def test_each_fault_kind_reaches_ccxt_as_its_error_class(
    sim: ExchangeSim, ex, kind: str, error: type
) -> None:
    ex.timeout = 1000  # the timeout fault holds the answer for 5 s (stop() wakes it)
    sim.faults.add("/api/v3/klines", kind, count=1, ms=5000)
    with pytest.raises(error) as info:
        ex.fetch_ohlcv("BTC/USDT", "1h", limit=5)
    ex.timeout = 10_000
    if kind == "reset":
        assert not isinstance(info.value, ccxt.RequestTimeout)
    assert [(f.kind, f.path) for f in sim.faults.injected] == [(kind, "/api/v3/klines")]
    assert len(ex.fetch_ohlcv("BTC/USDT", "1h", limit=5)) == 5  # count=1: the next call is served


def test_429_carries_retry_after_and_binance_code(sim: ExchangeSim) -> None:
    sim.faults.add("/api/v3/ping", "429", retry_after=7)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(sim.url + "/api/v3/ping", timeout=5)
    assert info.value.code == 429 and info.value.headers["Retry-After"] == "7"
    assert json.loads(info.value.read())["code"] == -1003


def test_latency_fault_delays_but_answers(sim: ExchangeSim, ex) -> None:
    sim.faults.add("/api/v3/time", "latency", ms=50)
    assert ex.fetch_time() == sim.clock.now_ms()
    assert [f.kind for f in sim.faults.injected] == ["latency"]


def test_probability_and_method_filter_are_honoured(sim: ExchangeSim, ex) -> None:
    sim.faults.add("/api/v3/*", "500", count=None, probability=0.5, method="GET")
    outcomes = []
    for _ in range(30):
        try:
            ex.fetch_time()
            outcomes.append(True)
        except ccxt.ExchangeNotAvailable:
            outcomes.append(False)
    assert 0 < outcomes.count(False) < 30
    assert len(sim.faults.injected) == outcomes.count(False)


def test_the_fault_file_example_in_the_docs_parses(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "emulator.md").read_text()
    example = doc.split("# faults.toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "faults.toml").write_text(example)
    plan = FaultPlan.from_file(tmp_path / "faults.toml")
    assert [f.kind for f in plan.rules] == ["503", "drop_response", "latency"]
    assert plan.rules[0].count is None and plan.rules[0].probability == 0.2


def test_fault_plan_from_toml_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "faults.toml"
    good.write_text(
        'seed = 3\n[[fault]]\npath = "*/order"\nkind = "drop_response"\nmethod = "POST"\n[[fault]]\npath = "/api/v3/klines"\nkind = "timeout"\nms = 2000\ncount = "forever"\n'
    )
    plan = FaultPlan.from_file(good)
    assert [(f.kind, f.count, f.method, f.ms) for f in plan.rules] == [
        ("drop_response", 1, "POST", 0),
        ("timeout", None, None, 2000),
    ]
    assert (
        plan.pick("GET", "/api/v3/order") is None and plan.pick("POST", "/api/v3/order") is not None
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[[fault]]\npath = "/x"\nkind = "404"\n[[fault]]\nkind = "429"\n')
    with pytest.raises(ConfigError) as info:
        FaultPlan.from_file(bad)
    assert (
        "fault #1" in str(info.value)
        and "fault #2" in str(info.value)
        and "bad.toml" in str(info.value)
    )


# -- signed endpoints ---------------------------------------------------------------------------


def test_market_buy_and_sell_with_client_ids_update_balances_orders_and_trades(
    sim: ExchangeSim, ex, frame: pd.DataFrame
) -> None:
    assert ex.fetch_balance()["total"]["USDT"] == 10_000
    buy = ex.create_order("BTC/USDT", "market", "buy", 0.1, params={"clientOrderId": "cid-buy-1"})
    price = round(frame["open"].iloc[-1], 2)  # the open of the candle the clock is in
    assert buy["status"] == "closed" and buy["clientOrderId"] == "cid-buy-1"
    assert buy["average"] == pytest.approx(price, abs=0.011)
    assert buy["fee"] == {
        "currency": "BTC",
        "cost": pytest.approx(0.0001),
    }  # Binance: fee in the asset received
    bal = ex.fetch_balance()
    assert bal["BTC"]["free"] == pytest.approx(0.0999)
    assert bal["USDT"]["free"] == pytest.approx(10_000 - buy["cost"])
    sell = ex.create_order(
        "BTC/USDT", "market", "sell", 0.0999, params={"clientOrderId": "cid-sell-1"}
    )
    assert sell["fee"]["currency"] == "USDT" and sell["fee"]["cost"] == pytest.approx(
        sell["cost"] * 0.001, rel=1e-6
    )
    again = ex.fetch_order(None, "BTC/USDT", params={"clientOrderId": "cid-sell-1"})
    assert (
        again["id"] == sell["id"]
        and again["status"] == "closed"
        and again["filled"] == pytest.approx(0.0999)
    )
    trades = ex.fetch_my_trades("BTC/USDT")
    assert [t["side"] for t in trades] == ["buy", "sell"] and [t["order"] for t in trades] == [
        buy["id"],
        sell["id"],
    ]
    assert sim.balances()["BTC"] == pytest.approx(0.0)
    assert sim.balances()["USDT"] == pytest.approx(
        10_000 - buy["cost"] + sell["cost"] * 0.999, abs=1e-6
    )
    assert [o["clientOrderId"] for o in sim.orders()] == ["cid-buy-1", "cid-sell-1"]
    posted = [q for m, p, q in sim.requests if (m, p) == ("POST", "/api/v3/order")]
    assert posted[0]["newClientOrderId"] == "cid-buy-1" and "signature" not in posted[0]


def test_concurrent_clients_get_unique_orders_and_consistent_balances(sim: ExchangeSim) -> None:
    import threading

    costs: list[float] = []
    errors: list[BaseException] = []

    def trader(n: int) -> None:
        try:
            e = client(sim)
            for j in range(4):
                costs.append(
                    e.create_order(
                        "BTC/USDT", "market", "buy", 0.001, params={"clientOrderId": f"t{n}-{j}"}
                    )["cost"]
                )
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=trader, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(o["orderId"] for o in sim.orders()) == list(range(1, 21))
    assert len({o["clientOrderId"] for o in sim.orders()}) == 20
    assert sim.balances()["USDT"] == pytest.approx(10_000 - sum(costs), abs=1e-6)
    assert sim.balances()["BTC"] == pytest.approx(20 * 0.001 * 0.999)


def test_slippage_and_quote_commission_options(frame: pd.DataFrame) -> None:
    with ExchangeSim(frame, slippage=0.001, commission="quote") as s:
        e = client(s)
        order = e.create_order("BTC/USDT", "market", "buy", 0.01)
        expected = Decimal(str(frame["open"].iloc[-1])) * Decimal("1.001")
        assert order["average"] == pytest.approx(float(expected), abs=0.011)
        assert order["fee"]["currency"] == "USDT"
        assert s.balances()["BTC"] == pytest.approx(0.01)
        assert s.balances()["USDT"] == pytest.approx(10_000 - order["cost"] * 1.001, abs=1e-6)


def test_market_buy_by_cost_uses_quote_order_qty(sim: ExchangeSim, ex, frame: pd.DataFrame) -> None:
    order = ex.create_market_buy_order_with_cost("BTC/USDT", 100)
    price = Decimal(str(order["average"]))
    assert abs(price - Decimal(str(frame["open"].iloc[-1]))) <= Decimal("0.01")
    assert order["filled"] == pytest.approx(
        float((Decimal(100) / price).quantize(Decimal("0.00001"), "ROUND_DOWN"))
    )
    assert order["cost"] <= 100
    assert [q.get("quoteOrderQty") for m, p, q in sim.requests if p == "/api/v3/order"] == ["100"]


def test_limit_order_rests_then_fills_when_the_price_path_reaches_it(
    sim: ExchangeSim, ex, frame: pd.DataFrame
) -> None:
    k = next(i for i in range(1000, 2000) if frame["low"].iloc[i] < frame["open"].iloc[i] * 0.995)
    sim.clock.set(open_ms(frame, k) + 1)
    price = float(ex.price_to_precision("BTC/USDT", frame["low"].iloc[k] + 0.01))
    order = ex.create_order(
        "BTC/USDT", "limit", "buy", 0.01, price, params={"clientOrderId": "lim-1"}
    )
    assert order["status"] == "open"
    assert [o["id"] for o in ex.fetch_open_orders("BTC/USDT")] == [order["id"]]
    assert ex.fetch_balance()["USDT"]["used"] == pytest.approx(price * 0.01)
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        ex.create_order("BTC/USDT", "limit", "buy", 0.01, price, params={"clientOrderId": "lim-1"})
    sim.clock.set(open_ms(frame, k + 1))
    filled = ex.fetch_order(order["id"], "BTC/USDT")
    assert filled["status"] == "closed" and filled["average"] == pytest.approx(price)
    assert ex.fetch_my_trades("BTC/USDT")[-1]["takerOrMaker"] == "maker"
    assert ex.fetch_open_orders("BTC/USDT") == []


def test_a_limit_between_the_open_and_the_price_now_rests(
    sim: ExchangeSim, ex, frame: pd.DataFrame
) -> None:
    k = next(i for i in range(1000, 2000) if frame["close"].iloc[i] > frame["open"].iloc[i] * 1.01)
    sim.clock.set(open_ms(frame, k) + HOUR * 95 // 100)  # late in a rising candle: price ~ close
    price = float(ex.price_to_precision("BTC/USDT", frame["open"].iloc[k] * 1.002))
    order = ex.create_order("BTC/USDT", "limit", "buy", 0.01, price)
    assert order["status"] == "open" and order["filled"] == 0  # no fill at a price already gone
    market = ex.create_order("BTC/USDT", "market", "buy", 0.01)
    assert market["average"] == pytest.approx(frame["open"].iloc[k], abs=0.011)  # market: the open


def test_cancel_releases_the_locked_funds(sim: ExchangeSim, ex, frame: pd.DataFrame) -> None:
    price = float(ex.price_to_precision("BTC/USDT", frame["close"].iloc[-1] * 0.5))
    order = ex.create_order("BTC/USDT", "limit", "buy", 0.01, price)
    assert ex.fetch_balance()["USDT"]["used"] > 0
    cancelled = ex.cancel_order(order["id"], "BTC/USDT")
    assert cancelled["status"] == "canceled"
    assert ex.fetch_balance()["USDT"] == {"free": 10_000, "used": 0, "total": 10_000}
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(order["id"], "BTC/USDT")
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("999", "BTC/USDT")


def test_partial_fills_arrive_over_the_next_requests(frame: pd.DataFrame) -> None:
    with ExchangeSim(frame, partial_fills=3) as s:
        e = client(s)
        order = e.create_order(
            "BTC/USDT", "market", "buy", 0.03, params={"clientOrderId": "part-1"}
        )
        assert order["status"] == "open" and order["filled"] == pytest.approx(0.01)
        second = e.fetch_order(None, "BTC/USDT", params={"clientOrderId": "part-1"})
        assert second["filled"] == pytest.approx(0.02) and second["status"] == "open"
        third = e.fetch_order(None, "BTC/USDT", params={"clientOrderId": "part-1"})
        assert third["filled"] == pytest.approx(0.03) and third["status"] == "closed"
        assert len(s.trades()) == 3


def test_wrong_secret_or_key_is_an_authentication_error(sim: ExchangeSim) -> None:
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        client(sim, secret="not-the-secret").fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        client(sim, key="someone-else").fetch_balance()


def test_stale_timestamp_is_refused(sim: ExchangeSim) -> None:
    e = client(sim)
    e.load_markets()
    e.options["timeDifference"] = 120_000  # the client's clock is two minutes behind
    with pytest.raises(ccxt.InvalidNonce):
        e.fetch_balance()


def test_insufficient_funds_and_filter_failures(sim: ExchangeSim, ex) -> None:
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order("BTC/USDT", "market", "buy", 5)  # ~50k USDT of BTC with 10k
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order("BTC/USDT", "market", "sell", 0.01)  # no BTC
    with pytest.raises(
        ccxt.BadRequest, match="NOTIONAL"
    ):  # what ccxt raises for Binance's -1013 NOTIONAL
        ex.create_order("BTC/USDT", "market", "buy", 0.0001)
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        ex.privatePostOrder(
            {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.012345"}
        )
    with pytest.raises(ccxt.InvalidOrder, match="PRICE_FILTER"):
        ex.privatePostOrder(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.01",
                "price": "100.001",
            }
        )
    assert sim.orders() == [] and sim.balances()["USDT"] == 10_000


def test_drop_response_places_the_order_although_the_client_saw_an_error(
    sim: ExchangeSim, ex
) -> None:
    sim.faults.add("/api/v3/order", "drop_response", method="POST")
    with pytest.raises(ccxt.NetworkError):
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "ambiguous-1"})
    found = ex.fetch_order(None, "BTC/USDT", params={"clientOrderId": "ambiguous-1"})
    assert found["status"] == "closed" and found["filled"] == pytest.approx(0.01)
    assert len(sim.orders()) == 1


@pytest.mark.parametrize("kind", ["timeout", "500"])
def test_processed_fault_on_submit_leaves_an_order_behind(sim: ExchangeSim, ex, kind: str) -> None:
    ex.timeout = 1000
    sim.faults.add("/api/v3/order", kind, method="POST", process=True, ms=5000)
    with pytest.raises(ccxt.NetworkError):  # RequestTimeout / ExchangeNotAvailable
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": f"late-{kind}"})
    ex.timeout = 10_000
    assert [o["clientOrderId"] for o in sim.orders()] == [f"late-{kind}"]
    assert [o["clientOrderId"] for o in ex.fetch_orders("BTC/USDT")] == [f"late-{kind}"]


def test_state_file_survives_an_emulator_restart(frame: pd.DataFrame, tmp_path: Path) -> None:
    state = tmp_path / "sim-state.json"
    with ExchangeSim(frame, state_file=state) as s:
        client(s).create_order(
            "BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "keep-1"}
        )
        before = s.balances()
    with ExchangeSim(frame, state_file=state) as s2:
        assert s2.balances() == before
        assert [o["clientOrderId"] for o in s2.orders()] == ["keep-1"]
        e = client(s2)
        assert (
            e.fetch_order(None, "BTC/USDT", params={"clientOrderId": "keep-1"})["status"]
            == "closed"
        )
        e.create_order("BTC/USDT", "market", "buy", 0.01)
        assert [o["orderId"] for o in s2.orders()] == [1, 2]
    state.write_text("{broken")
    with pytest.raises(Exception, match="not valid JSON"):
        ExchangeSim(frame, state_file=state)


# -- CLI ----------------------------------------------------------------------------------------


def test_cli_serves_synthetic_candles_until_sigint(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chartrl",
            "--log-format",
            "json",
            "exchange-sim",
            "--port",
            "0",
            "--synthetic",
            "--candles",
            "300",
            "--balance",
            "USDT=500",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        url = None
        for line in proc.stdout:  # type: ignore[union-attr]
            if "api_url" in line:
                url = json.loads(line)["api_url"]
                break
        assert url and url.startswith("http://127.0.0.1:")
        ping = urllib.request.urlopen(url + "/api/v3/ping", timeout=5).read()
        assert ping == b"{}"
        klines = json.loads(
            urllib.request.urlopen(
                url + "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1000", timeout=5
            ).read()
        )
        assert len(klines) == 300
        # History ends now and the clock is the wall clock, so `chartrl run` can trade on it.
        server = json.loads(urllib.request.urlopen(url + "/api/v3/time", timeout=5).read())
        hour = 3_600_000
        assert abs(server["serverTime"] - time.time() * 1000) < 10_000
        assert klines[-1][0] == server["serverTime"] // hour * hour  # the forming candle
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out


def test_cli_refuses_a_missing_csv(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chartrl", "exchange-sim", "--csv", str(tmp_path / "nope.csv")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2  # a wrong path is a usage error
    assert "nope.csv" in proc.stderr and "Traceback" not in proc.stderr


def test_csv_loader_uses_the_importer_on_the_real_export(shared_btc_csv: Path) -> None:
    from chartrl.cli.sim_cmd import load_candles

    candles, timeframe = load_candles(shared_btc_csv, "BTC/USDT", None)
    assert timeframe == "1h" and len(candles) > 30_000
    assert candles["timestamp"].is_monotonic_increasing and candles["timestamp"].is_unique
    with ExchangeSim(candles) as s:
        rows = client(s).fetch_ohlcv("BTC/USDT", "1h", limit=2)
        assert rows[-1][0] == int(candles["timestamp"].iloc[-1].value // 1_000_000)


def test_unreadable_or_damaged_state_file_is_one_clear_error(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    from chartrl.errors import DataError

    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\x8a\x00\xff" * 10)
    with pytest.raises(DataError, match="binary.json cannot be read"):
        ExchangeSim(frame, state_file=binary)
    with pytest.raises(DataError, match="cannot be read"):
        ExchangeSim(frame, state_file=tmp_path)  # a directory
    partial = tmp_path / "partial.json"
    partial.write_text('{"format": 1}')
    with pytest.raises(DataError, match=r"partial.json is damaged \(KeyError"):
        ExchangeSim(frame, state_file=partial)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--fee", "-0.01"),
        ("--slippage", "5"),
        ("--candles", "0"),
        ("--partial-fills", "0"),
        ("--speed", "0"),
        ("--port", "70000"),
    ],
)
def test_cli_refuses_an_out_of_range_option_naming_it(option: str, value: str, capsys) -> None:
    from chartrl.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--log-format", "json", "exchange-sim", "--synthetic", option, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith(f"error: {option} ") and err.count("\n") == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_cli_refuses_a_host_that_is_not_loopback_without_allow_remote(host: str, capsys) -> None:
    from chartrl.cli import main
    from chartrl.cli.sim_cmd import _is_loopback

    with pytest.raises(SystemExit) as exit_:
        main(["--log-format", "json", "exchange-sim", "--synthetic", "--host", host])
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2
        and err.startswith(f"error: --host {host} is not a loopback address")
        and "--allow-remote" in err
    )
    assert not _is_loopback(host)
    assert all(_is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))


def test_fault_file_with_wrong_types_names_each_field(tmp_path: Path) -> None:
    bad = tmp_path / "typed.toml"
    bad.write_text(
        '[[fault]]\npath = "/x"\nkind = "500"\nprobability = "high"\n'
        '[[fault]]\npath = "/x"\nkind = "500"\ncount = 2.5\n'
        '[[fault]]\nkind = "500"\n'
    )
    with pytest.raises(ConfigError) as info:
        FaultPlan.from_file(bad)
    assert info.value.problems == [
        "fault #1: probability = 'high' must be a number",
        "fault #2: count = 2.5 must be a whole number",
        "fault #3: missing path; every fault needs path and kind",
    ]
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not a text file"):
        FaultPlan.from_file(binary)
