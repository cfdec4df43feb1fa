"""The daemon's tick against the loopback exchange (manual clock), its retrain and `chartrl status`."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from chartrl.chart.spec import ChartSpec
from chartrl.config.settings import Settings
from chartrl.daemon.tick import Ticker
from chartrl.market.candles import to_ms
from chartrl.testing.exchange_sim import ExchangeSim, SimClock
from chartrl.testing.synthetic import synthetic_candles

SPEC = {
    "window": 30,
    "height": 32,
    "width": 32,
    "ma_periods": [5, 10],
    "bollinger_period": 10,
    "rsi_period": 6,
}
HOUR = 3_600_000
N = 720
START = 560  # the first tick decides on candle START


@pytest.fixture(scope="module")
def candles():
    return synthetic_candles(N, seed=5)


def _open_ms(candles, i: int) -> int:
    return int(to_ms(candles["timestamp"].iloc[i]))


@pytest.fixture
def sim(candles):
    clock = SimClock(_open_ms(candles, START + 1) + 5_000)  # candle START closed five seconds ago
    with ExchangeSim(candles, clock=clock) as s:
        yield s


def _save(model_dir: Path, strategy: str, seed: int = 0, always: int | None = None, **meta) -> None:
    """A tiny model; ``always`` = the action a recurrent one answers whatever it sees."""
    from chartrl.strategies.registry import build_policy
    from chartrl.train.checkpoint import save_model

    torch.manual_seed(seed)
    spec = ChartSpec(**SPEC)
    kw = {"widths": (4, 8), "feat_dim": 16} | ({"hidden_size": 8} if strategy != "cnn" else {})
    policy = build_policy(strategy, spec, **kw)
    if always is not None:
        with torch.no_grad():
            policy.out.weight.zero_()
            policy.out.bias.copy_(torch.nn.functional.one_hot(torch.tensor(always), 3).float())
    series = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}
    # A retrain continues these (a fresh challenger of the same tiny size, one short imitation epoch).
    hyper = {"imitation_epochs": 1, "num_envs": 2, "policy_kwargs": kw}
    save_model(
        model_dir, policy, {"chart_spec": spec, "series": series, "hyperparameters": hyper, **meta}
    )


def _settings(
    tmp_path: Path, sim, strategy: str = "cnnrnn", save: bool = True, **extra
) -> Settings:
    data = {
        "exchange": {"api_url": sim.url, "retry_base_delay": 0.0, "max_retries": 1},
        "market": {"since": "2020-01-01"},
        "data": {"dir": str(tmp_path / "data")},
        "chart": SPEC,
        "model": {"strategy": strategy, "device": "cpu"},
        "risk": {"max_orders_per_day": 1000},
    }
    for k, v in extra.items():
        data[k] = data.get(k, {}) | v
    s = Settings.model_validate(data)
    if save and strategy in ("cnn", "cnnrnn", "gru"):
        _save(s.model_dir, strategy)
    return s


def _decisions(s: Settings) -> list[tuple]:
    with sqlite3.connect(s.data_dir / "ledger.sqlite") as c:
        return c.execute(
            "SELECT candle_ms, action, final_action, model_version FROM decisions ORDER BY id"
        ).fetchall()


def test_tick_runs_the_pipeline_and_logs_one_event(tmp_path, sim, candles):
    s = _settings(tmp_path, sim)
    t = Ticker(s, clock=sim.clock)
    with capture_logs() as logs:
        for _ in range(3):
            r = t.tick()
            assert r.status == "done"
            sim.clock.advance(HOUR)
    ticks = [e for e in logs if e["event"] == "tick"]
    assert len(ticks) == 3
    for e in ticks:
        assert set(e["timings"]) == {"fetch_ms", "render_ms", "policy_ms", "order_ms", "total_ms"}
        assert e["action"] in ("hold", "buy", "sell") and e["model_version"] == t.runner.version
    rows = _decisions(s)
    assert [r[0] for r in rows] == [_open_ms(candles, START + k) for k in range(3)]
    saved = t.ledger.load_hidden("BTC/USDT")
    assert saved[1] == rows[-1][0] and torch.equal(saved[0], t.hidden)
    # Paper fills at the open of the candle after the decision: the book has executed candle t+1.
    assert t.account.last_candle_ms == rows[-1][0] + HOUR
    t.close()


def test_replayed_tick_does_nothing_and_restart_resumes_the_hidden_state(tmp_path, sim):
    s = _settings(tmp_path, sim)
    t = Ticker(s, clock=sim.clock)
    assert t.tick().status == "done"
    assert t.tick().status == "skipped"  # same candle again: no second decision, no second order
    assert len(_decisions(s)) == 1
    hidden = t.hidden.clone()
    t.close()
    t2 = Ticker(s, clock=sim.clock)  # a restart
    assert torch.equal(t2.hidden, hidden) and t2.tick().status == "skipped"
    sim.clock.advance(HOUR)
    with capture_logs() as logs:
        assert t2.tick().status == "done"
    assert not [e for e in logs if e["event"] == "hidden_rewarmed"]  # carried, not re-warmed
    t2.close()


def test_missed_candles_are_logged_and_the_state_stepped_over_them(tmp_path, sim):
    s = _settings(tmp_path, sim)
    t = Ticker(s, clock=sim.clock)
    t.tick()
    sim.clock.advance(3 * HOUR)
    with capture_logs() as logs:
        r = t.tick()
    assert r.status == "done" and r.missed == 2
    missed = [e for e in logs if e["event"] == "tick_missed"]
    assert len(missed) == 1 and missed[0]["count"] == 2
    t.close()


def test_a_decision_recorded_before_a_crash_is_executed_once_on_restart(tmp_path, sim, monkeypatch):
    s = _settings(tmp_path, sim, strategy="buyhold")
    _crash_after_the_decision(s, sim, monkeypatch)
    t2 = Ticker(s, clock=sim.clock)
    r = t2.tick()
    assert r.status == "recovered" and r.order is not None and r.order["side"] == "buy"
    assert t2.tick().status == "skipped"
    assert len(_decisions(s)) == 1 and len(t2.ledger.fills("paper")) == 1
    t2.close()


def _crash_after_the_decision(s: Settings, sim, monkeypatch) -> None:
    """A tick that records its decision and dies before the order (SIGKILL between the two)."""
    from chartrl.account.paper import PaperAccount

    t = Ticker(s, clock=sim.clock)

    def crash(*a, **k):
        raise KeyboardInterrupt("killed between the decision and the order")

    monkeypatch.setattr(PaperAccount, "execute", crash)
    with pytest.raises(KeyboardInterrupt):
        t.tick()
    monkeypatch.undo()
    t.close()


def test_a_recovered_decision_keeps_its_position_cap(tmp_path, sim, monkeypatch):
    s = _settings(tmp_path, sim, strategy="buyhold", risk={"max_position_value": 1000.0})
    _crash_after_the_decision(s, sim, monkeypatch)
    t = Ticker(s, clock=sim.clock)
    r = t.tick()
    assert r.status == "recovered" and r.order["side"] == "buy"
    assert r.order["price"] * r.order["amount"] <= 1000.0  # not the whole 10,000 of cash
    t.close()


def test_a_recovered_decision_holds_when_a_halt_arrived_meanwhile(tmp_path, sim, monkeypatch):
    from chartrl.strategies.base import Action

    s = _settings(tmp_path, sim, strategy="buyhold")
    _crash_after_the_decision(s, sim, monkeypatch)
    t = Ticker(s, clock=sim.clock)
    t.ledger.set_halt("manual", "test", "operator stopped trading during the restart")
    r = t.tick()
    assert r.status == "recovered" and r.final_action == Action.HOLD and r.reason == "ledger_halt"
    assert r.order is None and t.ledger.fills("paper") == [] and t.account.position == 0
    assert "HALTED (manual)" in t.status_text()
    t.close()


def test_live_daemon_starts_halted_on_a_balance_mismatch_and_resumes_after_clear(tmp_path, sim):
    """Exiting would only make systemd restart into the same halt: it runs on, holding."""
    from decimal import Decimal

    from chartrl.strategies.base import Action
    from chartrl.testing.exchange_sim import DEFAULT_API_KEY, DEFAULT_API_SECRET

    s = _settings(
        tmp_path,
        sim,
        strategy="buyhold",
        trading={"mode": "live"},
        exchange={"api_key": DEFAULT_API_KEY, "api_secret": DEFAULT_API_SECRET},
    )
    Ticker(s, clock=sim.clock, live=True).close()  # the first start takes the balance baseline
    sim.engine.free["USDT"] -= Decimal("100")  # a withdrawal chartrl did not make
    t = Ticker(s, clock=sim.clock, live=True)
    assert [h.reason for h in t.ledger.active_halts()] == ["balance_mismatch"]
    assert "HALTED (balance_mismatch)" in t.status_text() and "equity 9,900.00" in t.status_text()
    r = t.tick()
    assert r.action == Action.BUY and r.final_action == Action.HOLD and r.reason == "ledger_halt"
    assert sim.orders() == []
    t.ledger.clear_halts("operator")  # `chartrl halt clear`: the next tick starts the account again
    sim.clock.advance(HOUR)
    r = t.tick()
    assert r.final_action == Action.BUY and r.order is not None and len(sim.orders()) == 1
    assert t.ledger.active_halts() == [] and "HALTED" not in t.status_text()
    t.close()


def test_paper_daemon_trades_exactly_like_the_backtest(tmp_path, sim, candles):
    """Same policy, same candles: the ticks' fills equal the backtest's, amount rounding included
    (invariant: one pipeline). The backtest takes its fill rules as `chartrl backtest` does, from
    the market info the ticks stored, and the SMA rule buys and sells within these candles."""
    from chartrl.backtest.runner import run_backtest
    from chartrl.market.markets import market_rules
    from chartrl.strategies.rules import make_rule

    s = _settings(tmp_path, sim, strategy="sma", trading={"slippage_bps": 5.0, "fee": 0.001})
    t = Ticker(s, clock=sim.clock)
    ticks = 36
    actions = []
    for _ in range(ticks):
        actions.append(t.tick().final_action)
        sim.clock.advance(HOUR)
    rules, source = market_rules(s)
    assert source.startswith("stored binance market info") and rules.amount_step == pytest.approx(
        1e-5
    )
    res = run_backtest(
        make_rule("sma"),
        candles.iloc[: START + ticks + 1],
        ChartSpec(**SPEC),
        rules,
        span=(START, START + ticks),
    )
    assert actions == [int(a) for a in res.actions]
    # The emulator serves prices as 8-decimal strings, hence the rounding of price and fee; the
    # amounts are compared exactly: both sides round them down to the market's step.
    mine = [
        (f.timestamp, f.side, round(f.price, 6), f.amount, round(f.fee, 6))
        for f in t.account.book.fills
    ]
    theirs = [
        (f.timestamp, f.side, round(f.price, 6), f.amount, round(f.fee, 6)) for f in res.fills
    ]
    assert [side for _, side, *_ in theirs] == ["buy", "sell"]
    assert mine == theirs
    t.close()


def test_paper_fills_fall_back_to_the_stored_market_info_then_the_config(tmp_path, sim):
    """Exchange unreachable at start: the market info the last tick stored (what the backtest
    uses), so fills still round; with none stored, the config's fee, and a warning."""
    from chartrl.market.markets import market_path

    class Unreachable:
        def load_markets(self):
            raise ConnectionError("exchange down")

    s = _settings(tmp_path, sim, strategy="buyhold")
    Ticker(s, clock=sim.clock).close()  # reachable: reads the market (and stores it)
    with capture_logs() as logs:
        t = Ticker(s, clock=sim.clock, exchange=Unreachable())
    t.close()
    assert (t.account.rules.amount_step, t.account.rules.min_notional) == (pytest.approx(1e-5), 5.0)
    assert [e["source"] for e in logs if e["event"] == "market_rules"][0].startswith(
        "stored binance market info"
    )
    market_path(s.data_dir, "binance", "BTC/USDT").unlink()
    with capture_logs() as logs:
        t = Ticker(s, clock=sim.clock, exchange=Unreachable())
    t.close()
    assert t.account.rules.amount_step is None and t.account.rules.fee == s.trading.fee
    assert [
        e for e in logs if e["event"] == "market_info_unavailable" and e["log_level"] == "warning"
    ]


def test_a_promoted_model_is_reloaded_at_the_next_tick(tmp_path, sim):
    from chartrl.daemon.retrain import promote

    s = _settings(tmp_path, sim)
    t = Ticker(s, clock=sim.clock)
    t.tick()
    old = t.runner.version
    challenger = s.model_dir.with_name(".challenger")
    _save(challenger, "cnnrnn", seed=1)
    promote(challenger, s.model_dir)
    assert (
        s.model_dir.with_name("champion.prev") / "model.pt"
    ).is_file() and not challenger.exists()
    sim.clock.advance(HOUR)
    with capture_logs() as logs:
        r = t.tick()
    events = [e["event"] for e in logs]
    assert "model_reloaded" in events and "hidden_rewarmed" in events and r.status == "done"
    assert t.runner.version != old and _decisions(s)[-1][3] == t.runner.version
    t.close()


def test_status_reads_the_ledger_while_the_ticker_holds_it(tmp_path, sim, capsys):
    from chartrl.cli import main
    from chartrl.daemon.status import format_status, read_status

    s = _settings(tmp_path, sim, strategy="buyhold")
    t = Ticker(s, clock=sim.clock)
    t.tick()
    st = read_status(s.data_dir)
    assert st.mode == "paper" and st.symbol == "BTC/USDT" and st.model_version == "rule:buyhold"
    assert st.position > 0 and st.cash < 1 and st.initial_equity == 10_000.0 and st.equity > 0
    assert st.last_decision == "buy" and st.open_orders == [] and st.halts == []
    (s.data_dir / "HALT").touch()
    text = format_status(st, halt_file=s.halt_file)
    assert "equity" in text and "manual halt file" in text
    with pytest.raises(SystemExit) as exc:
        main(["status", "--data-dir", str(s.data_dir), "--json"])
    assert exc.value.code == 0 and '"last_decision": "buy"' in capsys.readouterr().out
    t.close()


# Short windows keep these tests fast; a rule that promotes any comparable challenger lets them
# test the swap (the promotion rule itself: tests/test_promotion.py).
RETRAIN = {
    "eval_days": 2,
    "retrain_window_days": 14,
    "promote_margin": -1e9,
    "promote_se_multiple": 0.0,
    "promote_skill_p": 1.0,
}


def _retrain_settings(tmp_path, sim, always: int = 0, **meta) -> Settings:
    """Settings for a retrain: a champion that always answers ``always``, candles fetched by one tick."""
    s = _settings(tmp_path, sim, save=False, daemon=RETRAIN)
    _save(s.model_dir, "cnnrnn", always=always, **meta)
    t = Ticker(s, clock=sim.clock)
    t.tick()
    t.close()
    return s


def test_retrain_promotes_or_keeps_and_records_both_scores(tmp_path, sim):
    from chartrl.account.ledger import Ledger
    from chartrl.daemon.retrain import run_retrain
    from chartrl.train.checkpoint import read_meta

    s = _retrain_settings(tmp_path, sim)  # a champion that never trades
    before = (s.model_dir / "model.pt").read_bytes()
    r = run_retrain(s, fetch=False, epochs=1, max_steps=4)
    # The champion never trades, so any challenger that does wins, whatever its Sharpe.
    assert r.status == "promoted", (r.error, r.reason)
    assert r.champion_score is None and r.challenger_score is not None
    assert r.reason.startswith("champion not comparable: no Sharpe")
    assert (s.model_dir.with_name("champion.prev") / "model.pt").read_bytes() == before
    # The challenger was trained under the market's fills (stored by the tick), as the paper account trades.
    fills = read_meta(s.model_dir)["fills"]
    assert fills["market_info"].startswith("stored binance market info") and fills[
        "amount_step"
    ] == pytest.approx(1e-5)
    assert not list(s.model_dir.parent.glob(".challenger-*"))
    s2 = _settings(tmp_path, sim, save=False, daemon=RETRAIN | {"promote_margin": 1e9})
    after = (s2.model_dir / "model.pt").read_bytes()
    r2 = run_retrain(s2, fetch=False, epochs=1, max_steps=4)
    assert r2.status == "kept" and (s2.model_dir / "model.pt").read_bytes() == after
    with Ledger.for_data_dir(s.data_dir) as led:
        rows = led.retrain_results()
    assert [x["status"] for x in rows] == ["kept", "promoted"]
    assert {"champion_score", "challenger_score", "reason", "buyhold"} <= set(rows[0]["metrics"])


def test_retrain_never_promotes_a_challenger_that_does_not_trade(tmp_path, sim, monkeypatch):
    """The demo's case: a losing champion that trades against a challenger that never does."""
    from chartrl.account.ledger import Ledger
    from chartrl.daemon import retrain
    from chartrl.daemon.status import format_status, read_status

    # Buys and holds through the held-out days (they fall); trained "until" after them: in-sample.
    s = _retrain_settings(
        tmp_path,
        sim,
        always=1,
        data_range={"from": "2020-01-01T00:00:00+00:00", "until": "2099-01-01T00:00:00+00:00"},
    )
    before = (s.model_dir / "model.pt").read_bytes()
    monkeypatch.setattr(
        retrain, "fine_tune", lambda champion, out, *a, **k: _save(out, "cnnrnn", always=0)
    )
    from chartrl.backtest import walkforward

    judged_under = []
    evaluate = walkforward.evaluate_runs
    monkeypatch.setattr(
        walkforward, "evaluate_runs", lambda *a, **k: judged_under.append(a[3]) or evaluate(*a, **k)
    )
    with capture_logs() as logs:
        r = retrain.run_retrain(s, fetch=False)
    # Both models are judged under the market's amount step and minimums, as they would trade.
    assert [(x.amount_step, x.min_notional) for x in judged_under] == [
        (pytest.approx(1e-5), 5.0)
    ] * 2
    assert r.champion_score is not None and r.champion_score < 0  # "0 > negative" used to promote
    assert r.status == "kept" and r.challenger_score is None, r.error
    assert r.reason == "challenger not comparable: no Sharpe (its equity never moved)"
    assert (s.model_dir / "model.pt").read_bytes() == before
    with Ledger.for_data_dir(s.data_dir) as led:
        m = led.retrain_results()[0]["metrics"]
    assert (
        m["reason"] == r.reason
        and m["challenger"]["trades"] == 0
        and m["champion"]["open_position_at_end"]
    )
    assert m["buyhold"]["sharpe"] is not None and m["buyhold"]["total_return"] < 0
    assert m["champion_in_sample"] is True
    assert (
        m["fills"]["market_info"].startswith("stored binance market info")
        and m["fills"]["min_notional"] == 5.0
    )
    assert [e for e in logs if e["event"] == "retrain_champion_in_sample"]
    assert "challenger not comparable" in format_status(read_status(s.data_dir))


def test_evaluation_candles_follow_the_timeframe(tmp_path):
    """Daily candles: 14 held-out days are 14 candles, enough; the errors name the real cause."""
    import pandas as pd

    from chartrl.daemon.retrain import _split
    from chartrl.errors import DataError

    days = pd.DataFrame({"timestamp": pd.date_range("2023-01-01", periods=200, freq="D", tz="UTC")})
    s = Settings.model_validate({"market": {"timeframe": "1d"}, "daemon": {"eval_days": 14}})
    train, evaluation, start = _split(s, days, window=30)
    assert (evaluation["timestamp"] >= start).sum() == 14 and train["timestamp"].iloc[-1] < start
    short = Settings.model_validate({"market": {"timeframe": "1d"}, "daemon": {"eval_days": 3}})
    with pytest.raises(
        DataError, match=r"daemon.eval_days = 3 holds 3 1d candles.*raise daemon.eval_days to 7"
    ):
        _split(short, days, window=30)
    with pytest.raises(DataError, match=r"30 of chart history.*fetch older history"):
        _split(s, days.tail(35).reset_index(drop=True), window=30)


_ABORT_SCRIPT = """
import sys, time
from pathlib import Path
from chartrl.config.settings import Settings
from chartrl.daemon import retrain

def slow(champion, out, *a, **k):  # a fine-tune that takes its time
    out.mkdir()
    (Path(sys.argv[2]) / "training").write_text("1")
    time.sleep(120)

retrain.fine_tune = slow
r = retrain.run_retrain(Settings.model_validate_json(sys.argv[1]), fetch=False)
print(r.summary())
sys.exit(1 if r.status == "failed" else 0)
"""


def test_sigterm_ends_a_retrain_cleanly(tmp_path, sim):
    import os
    import signal
    import subprocess
    import sys
    import time

    from chartrl.account.ledger import Ledger

    s = _retrain_settings(tmp_path, sim)
    script = tmp_path / "abort.py"
    script.write_text(_ABORT_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARTRL")}
    proc = subprocess.Popen(
        [sys.executable, str(script), s.model_dump_json(), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        end = time.monotonic() + 120
        while (
            not (tmp_path / "training").exists() and proc.poll() is None and time.monotonic() < end
        ):
            time.sleep(0.05)
        assert list(s.model_dir.parent.glob(".challenger-*")), (
            proc.stdout.read() if proc.poll() is not None else "no challenger"
        )
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and "retrain failed: aborted by SIGTERM" in out, out
    assert not list(s.model_dir.parent.glob(".challenger-*"))
    with Ledger.for_data_dir(s.data_dir) as led:
        row = led.retrain_results()[0]
    assert row["status"] == "failed" and row["finished_ms"] and "aborted by SIGTERM" in row["error"]


def test_live_status_values_the_start_when_it_was_taken(tmp_path):
    """Equity "vs start" is the baseline's value then, not its amounts at today's price; the symbol's
    own snapshots, a derivatives symbol included."""
    from chartrl.account.ledger import Ledger
    from chartrl.daemon.status import format_status, read_status

    sym = "BTC/USDT:USDT"
    with Ledger.for_data_dir(tmp_path) as led:
        led.record_balances(
            "live", "baseline", {"BTC": 1.0, "USDT": 1000.0}, symbol=sym, equity=1100.0
        )  # at 100
        led.record_balances("live", "exchange", {"BTC": 1.0, "USDT": 1000.0}, symbol=sym)
        led.record_balances(
            "live", "exchange", {"ETH": 5.0, "USDT": 7.0}, symbol="ETH/USDT"
        )  # another daemon's
        led.record_decision(
            symbol=sym, mode="live", candle_ms=0, action=0, final_action=0, reason="ok", price=200.0
        )
    st = read_status(tmp_path, symbol=sym, mode="live")
    assert (st.position, st.cash, st.equity, st.initial_equity) == (1.0, 1000.0, 1200.0, 1100.0)
    assert "vs start 1,100.00 (+9.09%)" in format_status(st)


def test_retrain_without_a_champion_fails_cleanly(tmp_path, sim, capsys):
    from chartrl.cli import main
    from chartrl.daemon.retrain import run_retrain

    s = _settings(tmp_path, sim, strategy="buyhold")
    r = run_retrain(s, fetch=False)
    assert r.status == "failed" and "no champion" in r.error
    with pytest.raises(SystemExit) as exc:
        main(["retrain", "--no-fetch", "--data-dir", str(s.data_dir)])
    assert exc.value.code == 1 and "retrain failed: no champion" in capsys.readouterr().out


def test_demo_writes_a_valid_config(tmp_path):
    from chartrl.cli.demo_cmd import _write_config
    from chartrl.config import load_settings

    cfg = tmp_path / "chartrl.toml"
    _write_config(cfg, tmp_path / "data", "http://127.0.0.1:1", "2020-01-01")
    s = load_settings(cfg, env={})
    assert s.exchange.api_url == "http://127.0.0.1:1" and s.data_dir == tmp_path / "data"
    assert s.chart.window == 60 and s.model.strategy == "cnnrnn"


def test_demo_runs_every_baseline_backtest_when_the_model_backtest_fails(tmp_path, monkeypatch):
    from rich.console import Console

    from chartrl.cli import demo_cmd

    ran = []

    def fake_cli(console, config, *args):
        ran.append(args[args.index("--out") + 1])
        return 1 if "--model" in args else 0

    monkeypatch.setattr(demo_cmd, "_cli", fake_cli)
    out = io.StringIO()
    failed = demo_cmd._backtests(
        Console(file=out),
        tmp_path / "c.toml",
        tmp_path / "model",
        "2024-01-01",
        tmp_path / "reports",
    )
    assert [Path(x).name for x in ran] == ["model", "sma", "random", "oracle"] and failed == [
        "model (exit 1)"
    ]
    assert "backtest failed: model (exit 1)" in out.getvalue()


def test_run_refuses_live_without_the_flag(tmp_path, capsys):
    from chartrl.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text('[trading]\nmode = "live"\n')
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(cfg), "run"])
    assert exc.value.code == 2 and "--live" in capsys.readouterr().err


def test_random_rule_draws_a_fresh_coin_per_candle(tmp_path, sim, candles):
    """The daemon's window slides, so the random baseline is seeded by candle, not by row index."""
    from chartrl.daemon.model import PolicyRunner

    s = _settings(tmp_path, sim, strategy="random")
    runner = PolicyRunner(s, "cpu")
    acts = [
        runner.decide(candles.iloc[: i + 1].tail(50), (0.0, 0.0), None).action
        for i in range(100, 400)
    ]
    again = [
        runner.decide(candles.iloc[: i + 1].tail(80), (0.0, 0.0), None).action
        for i in range(100, 400)
    ]
    assert acts == again  # the same candle draws the same coin whatever the window
    trade_rate = np.mean(np.array(acts) != 0)
    assert 0.03 < trade_rate < 0.25  # RandomStrategy's default trade_prob is 0.1
