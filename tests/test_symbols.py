"""Several symbols in one daemon (issue 14, item 3): separate books, isolated faults, the total
quote limit, per-symbol halts, config validation and `chartrl status` per symbol.

Each symbol's market is its own loopback emulator (the emulator serves one symbol); the daemon's
tick jobs are driven by hand under a manual clock, as in test_daemon.py.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as hst
from structlog.testing import capture_logs

from chartrl.config.settings import Settings
from chartrl.daemon.service import Daemon
from chartrl.daemon.status import read_daemon_state
from chartrl.daemon.symbol_tickers import SymbolTickers
from chartrl.daemon.tick import Ticker
from chartrl.errors import ConfigError, UsageError
from chartrl.market.exchange import make_exchange
from chartrl.testing.exchange_sim import ExchangeSim, SimClock
from chartrl.testing.synthetic import synthetic_candles
from test_daemon import HOUR, SPEC, START, _open_ms, _save

N = 720
BTC, ETH = "BTC/USDT", "ETH/USDT"


@pytest.fixture(scope="module")
def series():
    btc = synthetic_candles(N, seed=5)
    eth = synthetic_candles(N, seed=6)
    eth[["open", "high", "low", "close"]] /= 20  # another price level: books cannot coincide
    return {BTC: btc, ETH: eth}


@pytest.fixture
def sims(series):
    clock = SimClock(_open_ms(series[BTC], START + 1) + 5_000)
    with (
        ExchangeSim(series[BTC], symbol=BTC, clock=clock) as a,
        ExchangeSim(series[ETH], symbol=ETH, clock=clock) as b,
    ):
        yield {BTC: a, ETH: b}


def _settings(tmp_path: Path, sims, strategy="cnnrnn", symbols=(BTC, ETH), **extra) -> Settings:
    data = {
        "exchange": {"api_url": sims[BTC].url, "retry_base_delay": 0.0, "max_retries": 1},
        "market": {"since": "2020-01-01", "symbols": list(symbols)},
        "data": {"dir": str(tmp_path / "data")},
        "chart": SPEC,
        "model": {"strategy": strategy, "device": "cpu"},
        "risk": {"max_orders_per_day": 1000},
    }
    for k, v in extra.items():
        data[k] = data.get(k, {}) | v
    return Settings.model_validate(data)


def _tickers(s: Settings, sims) -> SymbolTickers:
    """Every symbol's ticker on the manual clock, each against its own emulator."""

    def build(narrow: Settings, *, ledger, exchange):
        url = sims[narrow.market.symbol].url
        ex = make_exchange(narrow.exchange.model_copy(update={"api_url": url}))
        return Ticker(narrow, clock=sims[BTC].clock, ledger=ledger, exchange=ex)

    return SymbolTickers(s, builder=build)


def _daemon(s: Settings, sims) -> Daemon:
    from chartrl.daemon.sdnotify import Notifier

    d = Daemon(s, lambda settings: _tickers(settings, sims), notifier=Notifier({}))
    d.ticker = d.ticker_factory(s)
    return d


def _rows(s: Settings, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(s.data_dir / "ledger.sqlite") as c:
        return c.execute(sql, args).fetchall()


def test_a_fault_on_one_symbol_leaves_the_other_trading_and_the_books_apart(tmp_path, sims, series):
    s = _settings(tmp_path, sims)
    _save(s.model_dir, "cnnrnn", always=1)  # one model (trained on BTC/USDT) buys everywhere
    with capture_logs() as logs:
        d = _daemon(s, sims)
        for rnd in range(4):
            if rnd == 1:  # ETH's exchange breaks down: every klines request fails
                sims[ETH].faults.add("/api/v3/klines", "500", count=None)
            if rnd == 3:
                sims[ETH].faults.clear()
            d._tick_job(BTC)
            d._tick_job(ETH)
            if rnd == 2:
                health = read_daemon_state(s.data_dir)["health"]
                assert health[BTC]["state"] == "ok"
                assert health[ETH]["state"] == "failing" and health[ETH]["failures"] == 2
            sims[BTC].clock.advance(HOUR)
    decided = _rows(s, "SELECT symbol, candle_ms FROM decisions ORDER BY id")
    btc = [c for sym, c in decided if sym == BTC]
    eth = [c for sym, c in decided if sym == ETH]
    first = _open_ms(series[BTC], START)
    assert btc == [first + k * HOUR for k in range(4)]  # BTC never missed a candle
    assert eth == [first, first + 3 * HOUR]  # ETH: before the fault, and once it is gone
    failed = [e for e in logs if e["event"] == "tick_failed"]
    assert failed and {e["symbol"] for e in failed} == {ETH}
    assert any(e["event"] == "model_transfer" and ETH in e["series"] for e in logs)
    assert read_daemon_state(s.data_dir)["health"][ETH]["state"] == "ok"
    # Books apart: each symbol's fills are its own, each book holds exactly what its fills bought.
    books = {r[0]: r[1:] for r in _rows(s, "SELECT symbol, cash, position FROM paper_books")}
    for sym in (BTC, ETH):
        fills = _rows(s, "SELECT side, amount, cost, fee FROM fills WHERE symbol = ?", sym)
        assert fills and all(f[0] == "buy" for f in fills)
        assert books[sym][1] == pytest.approx(sum(f[1] for f in fills))
        assert books[sym][0] == pytest.approx(10_000 - sum(f[2] + f[3] for f in fills))
    assert books[BTC][1] != pytest.approx(books[ETH][1])
    # Its own recurrent state each, saved after its own newest decision.
    hidden = dict(_rows(s, "SELECT symbol, candle_ms FROM hidden_states"))
    assert hidden == {BTC: btc[-1], ETH: eth[-1]}
    d.ticker.close()


def test_a_delisted_symbol_fails_alone_and_all_delisted_fails_the_start(tmp_path, sims):
    s = _settings(tmp_path, sims, strategy="buyhold", symbols=(BTC, "XRP/USDT"))
    with capture_logs() as logs:
        t = SymbolTickers(s, builder=lambda n, **kw: Ticker(n, clock=sims[BTC].clock, **kw))
    assert list(t.tickers) == [BTC] and "no market 'XRP/USDT'" in t.start_errors["XRP/USDT"]
    assert any(e["event"] == "symbol_start_failed" and e["symbol"] == "XRP/USDT" for e in logs)
    assert t.get(BTC).tick().status == "done"
    with pytest.raises(UsageError, match="no market 'XRP/USDT'"):
        t.get("XRP/USDT")  # built again at its tick: still refused, to that tick alone
    assert "NOT STARTED" in t.status_text() and BTC in t.status_text()
    t.close()
    only = _settings(tmp_path, sims, strategy="buyhold", symbols=("XRP/USDT", "DOGE/USDT"))
    with pytest.raises(UsageError, match="no market 'XRP/USDT'"):
        SymbolTickers(only, builder=lambda n, **kw: Ticker(n, clock=sims[BTC].clock, **kw))


def test_the_total_quote_limit_caps_then_blocks_a_buy_across_symbols(tmp_path, sims):
    from chartrl.account.risk import RiskGuard
    from chartrl.actions import Action

    s = _settings(tmp_path, sims, strategy="buyhold", risk={"max_total_quote": {"USDT": 12_000.0}})
    d = _daemon(s, sims)
    d._tick_job(BTC)  # all in: about 10,000 USDT of BTC, within the total
    d._tick_job(ETH)  # all in would make 20,000: capped to what the total leaves
    reasons = dict(_rows(s, "SELECT symbol, reason FROM decisions"))
    spent = dict(_rows(s, "SELECT symbol, sum(cost) FROM fills GROUP BY symbol"))
    assert reasons == {BTC: "ok", ETH: "max_total_quote_capped"}
    assert spent[BTC] == pytest.approx(10_000 / 1.001, rel=1e-3)
    assert 1_500 < spent[ETH] <= 12_000 - spent[BTC] + 1.0
    # A tighter total, which BTC's position alone already fills: ETH's buy is held.
    tight = s.risk.model_copy(update={"max_total_quote": {"USDT": 9_000.0}})
    guard = RiskGuard(tight, d.ticker.ledger, symbol=ETH, timeframe="1h", mode="paper")
    candle = _rows(s, "SELECT max(candle_ms) FROM decisions")[0][0]
    v = guard.check(
        Action.BUY, candle_ms=candle, equity=1e4, position_value=0.0, now_ms=candle + HOUR
    )
    assert (v.action, v.reason) == (Action.HOLD, "max_total_quote")
    # Another quote currency has its own total (none here): ETC/BTC is not limited by USDT's.
    other = RiskGuard(tight, d.ticker.ledger, symbol="ETC/BTC", timeframe="1h", mode="paper")
    v = other.check(
        Action.BUY, candle_ms=candle, equity=1.0, position_value=0.0, now_ms=candle + HOUR
    )
    assert (v.action, v.reason) == (Action.BUY, "ok")
    d.ticker.close()


def test_a_symbol_trades_under_its_own_risk_limits(tmp_path, sims):
    s = _settings(
        tmp_path,
        sims,
        strategy="buyhold",
        risk={"per_symbol": {ETH: {"max_position_value": 500.0}}, "max_orders_per_day": 1000},
    )
    assert s.for_symbol(ETH).risk.max_position_value == 500.0
    assert s.for_symbol(BTC).risk.max_position_value is None
    d = _daemon(s, sims)
    d._tick_job(BTC)
    d._tick_job(ETH)
    reasons = dict(_rows(s, "SELECT symbol, reason FROM decisions"))
    spent = dict(_rows(s, "SELECT symbol, sum(cost) FROM fills GROUP BY symbol"))
    assert reasons == {BTC: "ok", ETH: "max_position_value_capped"}
    assert spent[ETH] <= 500.0 and spent[BTC] > 9_000
    d.ticker.close()


def test_a_halt_can_stop_one_symbol_or_all(tmp_path, sims):
    from chartrl.account.ledger import Ledger
    from chartrl.cli.halt_cmd import halt, resume

    s = _settings(tmp_path, sims, strategy="buyhold")
    t = _tickers(s, sims)
    hid = halt(s, "test", "ETH looks wrong", symbol=ETH)
    assert t.get(ETH).risk.halted() == "ledger_halt" and t.get(BTC).risk.halted() is None
    halt(s, "test", "everything")
    assert t.get(BTC).risk.halted() == "ledger_halt"
    lines = resume(s, "test", symbol=ETH)
    assert f"cleared halt #{hid}" in lines[0] and "halts every symbol and stays" in lines[1]
    assert t.get(ETH).risk.halted() == "ledger_halt"  # the all-symbol halt still holds it
    with pytest.raises(UsageError, match="--symbol DOGE/USDT is not traded here"):
        halt(s, "test", "x", symbol="DOGE/USDT")
    resume(s, "test")
    assert t.get(ETH).risk.halted() is None and t.get(BTC).risk.halted() is None
    with Ledger.for_data_dir(s.data_dir) as led:
        assert led.active_halts() == []
    t.close()


def test_symbols_config_is_validated(tmp_path):
    from chartrl.config import load_settings
    from chartrl.daemon.checks import daemon_problems

    def load(text: str) -> Settings:
        f = tmp_path / "c.toml"
        f.write_text(text)
        return load_settings(f, env={})

    s = load('[market]\nsymbols = ["ETH/USDT", "ETC/BTC"]\n')
    assert s.market.symbol == "ETH/USDT" and s.market.all_symbols == ["ETH/USDT", "ETC/BTC"]
    assert (
        load('[market]\nsymbol = "ETC/BTC"\nsymbols = ["ETH/USDT", "ETC/BTC"]\n').market.symbol
        == "ETC/BTC"
    )
    assert load('[market]\nsymbol = "BTC/USDT"\n').market.all_symbols == ["BTC/USDT"]
    bad = {
        'symbol = "BTC/USDT"\nsymbols = ["ETH/USDT"]': "market.symbol = 'BTC/USDT' is not one of market.symbols",
        'symbols = ["BTC/USDT", "BTC/USDT"]': "BTC/USDT listed twice",
        "symbols = []": "an empty list trades nothing",
        'symbols = ["BTCUSDT"]': "'BTCUSDT' must be BASE/QUOTE",
        'reporting_currency = "usd"': "currency code in capitals",
    }
    for text, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            load(f"[market]\n{text}\n")
    with pytest.raises(ConfigError, match="a total limit must be > 0"):
        load("[risk]\nmax_total_quote = { USDT = 0 }\n")
    odd = load(
        '[market]\nsymbols = ["ETH/USDT"]\n[risk.per_symbol."XRP/USDT"]\nmax_orders_per_day = 3\n'
    )
    assert any("risk.per_symbol names XRP/USDT" in p for p in daemon_problems(odd))
    live = load('[market]\nsymbols = ["ETH/USDT", "ETC/BTC"]\n[trading]\nmode = "live"\n')
    assert any("live trading runs one symbol per daemon" in p for p in daemon_problems(live))
    # --symbol on the command line means that one series, replacing the list.
    narrowed = load_settings(
        tmp_path / "c.toml", env={}, overrides={"market": {"symbol": "BTC/USDT", "symbols": None}}
    )
    assert narrowed.market.all_symbols == ["BTC/USDT"]
    # The example file: three symbols, each book's cash in its own quote, no daemon problem.
    example = load_settings(Path(__file__).parents[1] / "config" / "several-symbols.toml", env={})
    assert daemon_problems(example) == [] and len(example.market.all_symbols) == 3
    assert example.for_symbol("ETC/BTC").trading.initial_cash == 0.3
    assert example.for_symbol(BTC).trading.initial_cash == 10_000.0
    # Per symbol models live apart; one shared model knows who shares it.
    per = Settings.model_validate(
        {"market": {"symbols": [BTC, ETH]}, "model": {"per_symbol": True}}
    )
    assert per.for_symbol(ETH).model_dir == per.data_dir / "models" / "champion" / "ETH-USDT"
    assert per.model_dir.name == "BTC-USDT"  # single-series commands: market.symbol's
    shared = Settings.model_validate({"market": {"symbols": [BTC, ETH]}})
    assert shared.for_symbol(ETH).model_dir == shared.model_dir


def test_status_shows_a_line_per_symbol_and_the_total(tmp_path, sims, capsys):
    from chartrl.cli import main

    s = _settings(tmp_path, sims, strategy="buyhold", symbols=(BTC, ETH, "ETC/BTC"))
    d = _daemon(s, sims)  # ETC/BTC has no emulator: it cannot start, and says so
    d._tick_job(BTC)
    d._tick_job(ETH)
    d._tick_job("ETC/BTC")
    d.ticker.close()
    from chartrl.cli.halt_cmd import halt

    halt(s, "test", "ETH looks odd", symbol=ETH)
    with pytest.raises(SystemExit) as exc:
        main(["status", "--data-dir", str(s.data_dir), "--json"])
    assert exc.value.code == 0
    out = capsys.readouterr().out  # the emulators' threads log on stdout too
    st, _ = json.JSONDecoder().raw_decode(out[out.index('{\n "running"') :])
    lines = {ln["symbol"]: ln for ln in st["per_symbol"]}
    assert (
        lines[BTC]["health"]["state"] == "ok" and lines["ETC/BTC"]["health"]["state"] == "failing"
    )
    total = st["total"]
    assert total["currency"] == "USDT"
    assert total["equity"] == pytest.approx(lines[BTC]["equity"] + lines[ETH]["equity"])
    with pytest.raises(SystemExit):
        main(["status", "--data-dir", str(s.data_dir)])
    out = capsys.readouterr().out
    assert "3 symbols" in out and out.count("health ") == 3 and "total         " in out
    assert "HALTED (manual)" in next(ln for ln in out.splitlines() if ln.startswith(f"  {ETH}"))
    assert "HALTED" not in next(ln for ln in out.splitlines() if ln.startswith(f"  {BTC}"))
    assert f"manual of {ETH} since" in out
    # A quote without a price to convert it at is said, not guessed.
    from chartrl.daemon.status import format_status, read_status

    st = read_status(s.data_dir, reporting="EUR", exchange="binance", timeframe="1h")
    assert st.total.equity is None and set(st.total.missing) == {"USDT"}
    assert "not converted: no USDT/EUR or EUR/USDT price" in format_status(st)


@hsettings(max_examples=25, deadline=None)
@given(
    hst.lists(
        hst.tuples(
            hst.sampled_from([BTC, ETH, "ETC/BTC"]),
            hst.sampled_from([0, 1, 2]),
            hst.floats(0.5, 2.0),
        ),
        max_size=25,
    )
)
def test_each_symbols_position_is_the_sum_of_its_own_fills(steps):
    """Invariant 8 per symbol: whatever the interleaving of trades on a shared ledger, a symbol's
    book (and the exposure the total limit adds up) equals what its own fills bought minus sold."""
    from chartrl.account.base import Candle
    from chartrl.account.exposure import holdings
    from chartrl.account.ledger import Ledger
    from chartrl.account.paper import PaperAccount

    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.sqlite")
        accounts = {
            sym: PaperAccount(ledger, symbol=sym, initial_cash=1000.0, clock=lambda: 0)
            for sym in (BTC, ETH, "ETC/BTC")
        }
        t = {sym: 0 for sym in accounts}
        for sym, action, price in steps:
            t[sym] += HOUR
            accounts[sym].execute(action, Candle(t[sym], price, price, price, price, 0.0))
        held = holdings(ledger, "paper")
        for sym, acc in accounts.items():
            fills = ledger.fills("paper", sym)
            assert all(f.symbol == sym for f in fills)
            bought = sum(f.amount if f.side == "buy" else -f.amount for f in fills)
            assert acc.book.position == pytest.approx(bought, abs=1e-9)
            assert (held[sym].amount if sym in held else 0.0) == pytest.approx(bought, abs=1e-9)
            again = PaperAccount(ledger, symbol=sym, initial_cash=1000.0, clock=lambda: 0)
            assert again.book.position == pytest.approx(acc.book.position, abs=1e-12)
            assert again.book.cash == pytest.approx(acc.book.cash, abs=1e-9)
        ledger.close()


def test_retrain_per_symbol_or_one_model_on_every_symbol(tmp_path, sims, monkeypatch):
    from chartrl.account.ledger import Ledger
    from chartrl.daemon.retrain import run_retrains
    from chartrl.train.checkpoint import read_meta
    from test_daemon import RETRAIN

    s = _settings(tmp_path, sims, model={"per_symbol": True}, daemon=RETRAIN)
    for seed, sym in enumerate((BTC, ETH)):  # ETH/USDT's champion came from BTC/USDT (a transfer)
        _save(s.for_symbol(sym).model_dir, "cnnrnn", seed=seed, always=0)
    d = _daemon(s, sims)  # one tick each stores the candles the retrain reads
    d._tick_job(BTC)
    d._tick_job(ETH)
    d.ticker.close()
    results = run_retrains(s, fetch=False, epochs=1, max_steps=4)
    assert [r.symbol for r in results] == [BTC, ETH]
    assert all(r.status in ("promoted", "kept") for r in results), [r.error for r in results]
    assert results[0].champion != results[1].champion  # two models, each its own
    for sym in (BTC, ETH):  # each promoted challenger learned from its own symbol's candles
        meta = read_meta(s.for_symbol(sym).model_dir)
        assert meta["series"]["symbol"] == sym and meta["parent"]
    with Ledger.for_data_dir(s.data_dir) as led:
        rows = led._query("SELECT symbol, status FROM retrain_results ORDER BY id")
    assert [r[0] for r in rows] == [BTC, ETH]
    # One model for every symbol: fine-tuned on both at once, judged on each symbol's own days.
    shared = _settings(tmp_path / "shared", sims, daemon=RETRAIN)
    _save(shared.model_dir, "cnnrnn", always=0)  # learnt from BTC/USDT only
    d = _daemon(shared, sims)
    d._tick_job(BTC)
    d._tick_job(ETH)
    d.ticker.close()
    (r,) = run_retrains(shared, fetch=False, epochs=1, max_steps=4)
    assert r.status == "promoted", r.error  # a champion that never trades loses on both
    assert set(r.metrics["per_symbol"]) == {BTC, ETH} and r.metrics["left_out"] == {}
    assert r.reason.startswith(f"{BTC}: ") and f"; {ETH}: " in r.reason
    with Ledger.for_data_dir(shared.data_dir) as led:
        row = led.retrain_results()[0]
    assert row["symbol"] is None and set(row["metrics"]["per_symbol"]) == {BTC, ETH}
    meta = read_meta(shared.model_dir)  # the new champion learnt from both symbols
    assert [t["symbol"] for t in meta["training_series"]] == [BTC, ETH]
    # Better on one symbol, worse on the other: the one model that trades both stays.
    from chartrl.daemon import retrain_shared
    from chartrl.daemon.retrain_judge import Verdict

    def split_verdict(h, *a, **k):
        wins = h.settings.market.symbol == BTC
        return Verdict(wins, "wins" if wins else "loses", None, None, "v", {})

    monkeypatch.setattr(retrain_shared, "judge", split_verdict)
    (r,) = run_retrains(shared, fetch=False, epochs=1, max_steps=4)
    assert r.status == "kept" and r.reason == f"{BTC}: wins; {ETH}: loses"


def test_one_tick_job_per_symbol_and_a_reload_drops_a_removed_symbol(tmp_path):
    import threading

    from chartrl.daemon.sdnotify import Notifier
    from test_daemon_service import RecordingTicker, _wait

    def cfg(symbols):
        return Settings.model_validate(
            {
                "data": {"dir": str(tmp_path)},
                "market": {"symbols": symbols},
                "daemon": {"heartbeat_seconds": 0.05, "retrain_enabled": False},
            }
        )

    d = Daemon(
        cfg([BTC, ETH]), RecordingTicker, reload_settings=lambda: cfg([ETH]), notifier=Notifier({})
    )
    th = threading.Thread(target=d.run)
    th.start()
    try:
        assert _wait(lambda: d.scheduler is not None and d.scheduler.running)
        assert sorted(j.id for j in d.scheduler.get_jobs()) == [f"tick:{BTC}", f"tick:{ETH}"]
        assert _wait(lambda: "health" in read_daemon_state(tmp_path))
        health = read_daemon_state(tmp_path)["health"]
        assert health == {BTC: {"state": "waiting"}, ETH: {"state": "waiting"}}
        d.request_reload()
        assert _wait(lambda: [j.id for j in d.scheduler.get_jobs()] == [f"tick:{ETH}"])
    finally:
        d.request_stop()
        th.join(10)
    assert read_daemon_state(tmp_path)["symbols"] == [ETH]


def test_bad_candles_of_one_symbol_miss_its_tick_only(tmp_path, series):
    bad = series[ETH].copy()
    bad.loc[START + 1, ["open", "high", "low", "close"]] *= 3  # an implausible print on ETH alone
    clock = SimClock(_open_ms(series[BTC], START + 1) + 5_000)
    with (
        ExchangeSim(series[BTC], symbol=BTC, clock=clock) as a,
        ExchangeSim(bad, symbol=ETH, clock=clock) as b,
    ):
        sims = {BTC: a, ETH: b}
        s = _settings(tmp_path, sims, strategy="buyhold")
        d = _daemon(s, sims)
        for _ in range(2):
            d._tick_job(BTC)
            d._tick_job(ETH)
            clock.advance(HOUR)
        health = read_daemon_state(s.data_dir)["health"]
        d.ticker.close()
    assert health[BTC]["state"] == "ok"
    assert health[ETH] | {"at": None, "last_ok": None} == {
        "state": "missed",
        "error": "price_quarantined",
        "failures": 0,
        "at": None,
        "last_ok": None,
    }
    decided = _rows(s, "SELECT symbol, count(*) FROM decisions GROUP BY symbol")
    assert dict(decided) == {BTC: 2, ETH: 1}


def test_the_console_reads_a_ledger_of_several_symbols(tmp_path, sims):
    from fastapi.testclient import TestClient

    from chartrl.console.app import create_app
    from test_console import AUTH, GETS, TOKEN

    s = _settings(tmp_path, sims, strategy="buyhold", console={"token": TOKEN})
    d = _daemon(s, sims)
    d._tick_job(BTC)
    d._tick_job(ETH)
    d.ticker.close()
    with TestClient(create_app(s, TOKEN)) as client:
        for path in GETS:
            assert client.get(path, headers=AUTH).status_code == 200, path
        st = client.get("/api/status", headers=AUTH).json()
    assert {ln["symbol"] for ln in st["per_symbol"]} == {BTC, ETH}
    assert st["total"]["currency"] == "USDT" and st["total"]["equity"] > 19_000


def test_a_v2_ledger_halt_halts_every_symbol_after_the_migration(tmp_path):
    from chartrl.account.ledger import Ledger
    from chartrl.account.migrations import MIGRATIONS

    path = tmp_path / "ledger.sqlite"
    with Ledger(path, migrations=MIGRATIONS[:2]) as old:  # a ledger written before v3
        old._conn.execute(
            "INSERT INTO halts (created_ms, reason, source) VALUES (1, 'balance_mismatch', 'live')"
        )
    with Ledger(path) as led:
        assert led.schema_version == 3
        assert [h.symbol for h in led.active_halts(ETH)] == [None]
        assert [h.reason for h in led.active_halts(BTC)] == ["balance_mismatch"]
    assert (tmp_path / "ledger.sqlite.bak-v2").is_file()
