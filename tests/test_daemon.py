"""The daemon's tick against the loopback exchange (manual clock), its retrain and `chartrl status`."""

from __future__ import annotations

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

SPEC = {"window": 30, "height": 32, "width": 32, "ma_periods": [5, 10], "bollinger_period": 10, "rsi_period": 6}
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


def _save(model_dir: Path, strategy: str, seed: int = 0) -> None:
    from chartrl.backtest.checkpoint import save_model
    from chartrl.strategies.registry import build_policy

    torch.manual_seed(seed)
    spec = ChartSpec(**SPEC)
    kw = {"widths": (4, 8), "feat_dim": 16} | ({"hidden_size": 8} if strategy != "cnn" else {})
    policy = build_policy(strategy, spec, **kw)
    series = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}
    # A retrain continues these (a fresh challenger of the same tiny size, one short imitation epoch).
    hyper = {"imitation_epochs": 1, "num_envs": 2, "policy_kwargs": kw}
    save_model(model_dir, policy, {"chart_spec": spec, "series": series, "hyperparameters": hyper})


def _settings(tmp_path: Path, sim, strategy: str = "cnnrnn", save: bool = True, **extra) -> Settings:
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
        return c.execute("SELECT candle_ms, action, final_action, model_version FROM decisions ORDER BY id").fetchall()


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
    t = Ticker(s, clock=sim.clock)
    from chartrl.account.paper import PaperAccount

    def crash(*a, **k):
        raise KeyboardInterrupt("killed between the decision and the order")

    monkeypatch.setattr(PaperAccount, "execute", crash)
    with pytest.raises(KeyboardInterrupt):
        t.tick()
    monkeypatch.undo()
    t.close()
    t2 = Ticker(s, clock=sim.clock)
    r = t2.tick()
    assert r.status == "recovered" and r.order is not None and r.order["side"] == "buy"
    assert t2.tick().status == "skipped"
    assert len(_decisions(s)) == 1 and len(t2.ledger.fills("paper")) == 1
    t2.close()


def test_paper_daemon_trades_exactly_like_the_backtest(tmp_path, sim, candles):
    """Same policy, same candles: the ticks' fills equal the backtest's (invariant: one pipeline)."""
    from chartrl.account.fills import MarketRules
    from chartrl.backtest.runner import run_backtest
    from chartrl.daemon.model import PolicyRunner

    s = _settings(tmp_path, sim, strategy="cnn", trading={"slippage_bps": 5.0, "fee": 0.001})
    t = Ticker(s, clock=sim.clock)
    ticks = 12
    actions = []
    for _ in range(ticks):
        actions.append(t.tick().final_action)
        sim.clock.advance(HOUR)
    policy = PolicyRunner(s, "cpu").policy
    rules = MarketRules(fee=0.001, slippage_bps=5.0)
    res = run_backtest(policy, candles.iloc[: START + ticks + 1], ChartSpec(**SPEC), rules, span=(START, START + ticks))
    assert actions == [int(a) for a in res.actions]
    mine = [(f.timestamp, f.side, round(f.price, 6), round(f.amount, 9)) for f in t.account.book.fills]
    theirs = [(f.timestamp, f.side, round(f.price, 6), round(f.amount, 9)) for f in res.fills]
    assert mine == theirs
    t.close()


def test_a_promoted_model_is_reloaded_at_the_next_tick(tmp_path, sim):
    from chartrl.daemon.retrain import promote

    s = _settings(tmp_path, sim)
    t = Ticker(s, clock=sim.clock)
    t.tick()
    old = t.runner.version
    challenger = s.model_dir.with_name(".challenger")
    _save(challenger, "cnnrnn", seed=1)
    promote(challenger, s.model_dir)
    assert (s.model_dir.with_name("champion.prev") / "model.pt").is_file() and not challenger.exists()
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


def test_retrain_promotes_or_keeps_and_records_both_scores(tmp_path, sim):
    from chartrl.account.ledger import Ledger
    from chartrl.daemon.retrain import run_retrain

    base = {"eval_days": 2, "retrain_window_days": 14}
    s = _settings(tmp_path, sim, daemon=base | {"promote_margin": -1e9})
    t = Ticker(s, clock=sim.clock)  # its tick fetches the candles into the store
    t.tick()
    t.close()
    before = (s.model_dir / "model.pt").read_bytes()
    r = run_retrain(s, fetch=False, epochs=1, max_steps=4)
    assert r.status == "promoted", r.error
    assert r.champion_score is not None and r.challenger_score is not None
    assert (s.model_dir.with_name("champion.prev") / "model.pt").read_bytes() == before
    assert not list(s.model_dir.parent.glob(".challenger-*"))
    s2 = _settings(tmp_path, sim, save=False, daemon=base | {"promote_margin": 1e9})
    after = (s2.model_dir / "model.pt").read_bytes()
    r2 = run_retrain(s2, fetch=False, epochs=1, max_steps=4)
    assert r2.status == "kept" and (s2.model_dir / "model.pt").read_bytes() == after
    with Ledger.for_data_dir(s.data_dir) as led:
        rows = led.retrain_results()
    assert [x["status"] for x in rows] == ["kept", "promoted"]
    assert {"champion_score", "challenger_score"} <= set(rows[0]["metrics"])


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
    acts = [runner.decide(candles.iloc[: i + 1].tail(50), (0.0, 0.0), None).action for i in range(100, 400)]
    again = [runner.decide(candles.iloc[: i + 1].tail(80), (0.0, 0.0), None).action for i in range(100, 400)]
    assert acts == again  # the same candle draws the same coin whatever the window
    trade_rate = np.mean(np.array(acts) != 0)
    assert 0.03 < trade_rate < 0.25  # RandomStrategy's default trade_prob is 0.1
