"""Issue 12: live trading you can trust. One daemon per data dir, only its own coins, a reload that
cannot kill the daemon, a status that never lies. Everything against the loopback emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chartrl.account.base import Candle
from chartrl.account.ledger import Ledger
from chartrl.account.live import LiveAccount
from chartrl.cli import main
from chartrl.config.settings import Settings
from chartrl.strategies.base import Action
from chartrl.testing.exchange_sim import ExchangeSim
from chartrl.testing.synthetic import synthetic_candles


def _cli(*argv: str) -> int:
    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _wait(cond, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHARTRL", "NOTIFY_SOCKET", "WATCHDOG"))
    }


# -- 1. one writer per data dir ---------------------------------------------------------------------
def test_a_second_writer_of_a_data_dir_is_refused_naming_the_pid(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    csv = tmp_path / "c.csv"
    synthetic_candles(50, seed=3).assign(
        date=lambda d: d.timestamp.dt.strftime("%Y-%m-%d %H:%M:%S")
    )[["date", "open", "high", "low", "close", "volume"]].to_csv(csv, index=False)
    with ExchangeSim(synthetic_candles(300, seed=1)) as sim:
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'[exchange]\napi_url = "{sim.url}"\n[data]\ndir = "{data}"\n'
            '[model]\nstrategy = "buyhold"\n[daemon]\nheartbeat_seconds = 0.2\n'
            "retrain_enabled = false\n"
        )
        first = subprocess.Popen(
            [sys.executable, "-m", "chartrl", "--config", str(cfg), "run"],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            def started() -> bool:
                try:
                    return json.loads((data / "daemon.json").read_text()).get("pid") == first.pid
                except (OSError, ValueError):
                    return False

            assert _wait(started), "the first daemon did not start"
            second = subprocess.run(
                [sys.executable, "-m", "chartrl", "--config", str(cfg), "run"],
                env=_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert second.returncode == 2, second.stderr
            err = second.stderr.strip().splitlines()
            assert len(err) == 1 and f"pid {first.pid}" in err[0] and str(data) in err[0], err
            capsys.readouterr()
            # fetch, import and retrain refuse too, in this (another) process.
            for argv in (
                ["fetch"],
                ["import", str(csv)],
                ["retrain", "--no-fetch"],
            ):
                assert _cli("--config", str(cfg), *argv) == 2, argv
                msg = capsys.readouterr().err
                assert f"pid {first.pid}" in msg and "in use" in msg, (argv, msg)
        finally:
            first.terminate()
            first.wait(60)
    # The holder gone, the lock is free again (the kernel dropped it with the process).
    from chartrl.daemon import lock

    lock.acquire(data, "test")
    lock.release(data)


def test_the_daemons_retrain_child_works_under_the_daemons_lock(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from chartrl.account.ledger import Ledger
    from chartrl.config.settings import Settings
    from chartrl.daemon import lock
    from chartrl.daemon.sdnotify import Notifier
    from chartrl.daemon.service import Daemon

    data = tmp_path / "data"
    settings = Settings.model_validate({"data": {"dir": str(data)}})
    daemon = Daemon(
        settings, lambda s: None, notifier=Notifier({}), cli_overrides=["--data-dir", str(data)]
    )
    daemon._lock_fd = lock.acquire(data, "chartrl run")
    try:
        with capture_logs() as logs:
            daemon._retrain_job()  # no champion: the child records a failed cycle, exit 1 (not 2)
    finally:
        lock.release(data)
    assert [e["exit_code"] for e in logs if e["event"] == "retrain_finished"] == [1]
    with Ledger.for_data_dir(data) as led:
        assert "no champion" in led.retrain_results()[0]["error"]


# -- 2. only its own coins --------------------------------------------------------------------------
CANDLES = synthetic_candles(120, seed=5)


def _live(url: str, data_dir: Path | None = None, **trading) -> Settings:
    from chartrl.testing.exchange_sim import DEFAULT_API_KEY, DEFAULT_API_SECRET

    return Settings.model_validate(
        {
            "exchange": {
                "api_url": url,
                "api_key": DEFAULT_API_KEY,
                "api_secret": DEFAULT_API_SECRET,
            },
            "trading": {"mode": "live", "order_lookup_grace_seconds": 0.0, **trading},
            **({"data": {"dir": str(data_dir)}} if data_dir else {}),
        }
    )


def _candle(i: int = -1) -> Candle:
    r = CANDLES.iloc[i]
    return Candle(int(r.timestamp.value // 1_000_000), r.open, r.high, r.low, r.close, r.volume)


def _account(settings: Settings, ledger: Ledger) -> LiveAccount:
    acc = LiveAccount(settings, ledger, live=True, sleep=lambda s: time.sleep(min(s, 0.05)))
    acc.start()
    return acc


@pytest.mark.parametrize("max_quote", [None, 300.0])
def test_live_trades_only_its_own_coins_within_its_budget(tmp_path: Path, max_quote) -> None:
    from chartrl.daemon.status import format_status, read_status

    with ExchangeSim(CANDLES, balances={"USDT": 1000.0, "BTC": 5.0}) as sim:
        led = Ledger.for_data_dir(tmp_path)
        acc = _account(_live(sim.url, max_quote=max_quote), led)
        assert acc.position == 0.0 and acc.external()["BTC"] == 5.0
        # The operator's 5 BTC are not a position: a BUY buys, with the budget only.
        fill = acc.execute(Action.BUY, _candle())
        assert fill is not None and fill.side == "buy"
        budget = max_quote or 1000.0
        assert fill.amount * fill.price <= budget * (1 + 1e-9)
        assert fill.amount * fill.price > 0.9 * budget
        bought = acc.position
        assert bought > 0 and abs(sim.balances()["BTC"] - 5.0 - bought) < 1e-9
        st = read_status(tmp_path, symbol="BTC/USDT", mode="live")
        assert abs(st.position - bought) < 1e-12 and abs(st.external["BTC"] - 5.0) < 1e-9
        assert "external      BTC 5" in format_status(st)
        # A SELL sells what the bot bought (to the amount step), never the operator's holdings.
        fill = acc.execute(Action.SELL, _candle())
        assert fill is not None and fill.side == "sell"
        assert fill.amount <= bought and bought - fill.amount < 1e-5  # the rest is dust
        assert 5.0 - 1e-12 <= sim.balances()["BTC"] < 5.0 + 1e-5
        assert acc.execute(Action.SELL, _candle()) is None  # flat (dust): the 5 BTC stay
        assert 5.0 - 1e-12 <= sim.balances()["BTC"] < 5.0 + 1e-5
        led.close()


# -- 3. config check refuses what the daemon refuses; a failed reload keeps the old config ----------
@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ('[daemon]\nretrain_cron = "every night"\n', "daemon.retrain_cron"),
        ('[market]\ntimeframe = "2w"\n', "market.timeframe"),
        (
            '[trading]\nmode = "live"\norder_lookup_grace_seconds = 3.0\n',
            "trading.order_lookup_grace_seconds",
        ),
    ],
)
def test_config_check_refuses_what_the_daemon_refuses(
    tmp_path: Path, capsys, monkeypatch, toml, field
) -> None:
    monkeypatch.setenv("CHARTRL__EXCHANGE__API_KEY", "k")
    monkeypatch.setenv("CHARTRL__EXCHANGE__API_SECRET", "s")
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    assert _cli("--config", str(cfg), "config", "check") == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err, err
    # ... and `chartrl run` refuses the same before it starts anything.
    assert _cli("--config", str(cfg), "run", *(["--live"] if "live" in toml else [])) == 2
    assert field in capsys.readouterr().err


class _Ticker:
    built: list[str] = []

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        _Ticker.built.append(settings.market.timeframe)

    def tick(self) -> None:
        pass

    def status_text(self) -> str:
        return "test"

    def record_missed(self, *_a) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_reload_that_fails_for_any_reason_keeps_the_old_configuration(
    tmp_path: Path, monkeypatch
) -> None:
    import threading

    from structlog.testing import capture_logs

    from chartrl.daemon import service, service_jobs
    from chartrl.daemon.sdnotify import Notifier

    base = {"data": {"dir": str(tmp_path)}, "daemon": {"heartbeat_seconds": 0.05}}
    edits = iter(
        [
            {"daemon": {"heartbeat_seconds": 0.05, "retrain_cron": "every night"}},
            {"market": {"timeframe": "4h"}},  # valid, but scheduling it fails below
        ]
    )

    def reload() -> Settings:
        return Settings.model_validate(base | next(edits))

    real = service_jobs.tick_trigger

    def flaky(tf: str, delay: float):
        if tf == "4h" and threading.current_thread().name != "MainThread":
            raise RuntimeError("scheduler exploded")
        return real(tf, delay)

    monkeypatch.setattr(service_jobs, "tick_trigger", flaky)
    daemon = service.Daemon(
        Settings.model_validate(base), _Ticker, reload_settings=reload, notifier=Notifier({})
    )
    codes: list[int] = []
    th = threading.Thread(target=lambda: codes.append(daemon.run()))
    with capture_logs() as logs:
        th.start()
        try:
            assert _wait(lambda: daemon.scheduler is not None and daemon.scheduler.running, 20)
            for n in (1, 2):
                daemon.request_reload()
                assert _wait(lambda n=n: sum(e["event"] == "reload_failed" for e in logs) == n, 20)
            assert th.is_alive()
            assert daemon.settings.daemon.retrain_cron == "0 3 * * *"
            assert daemon.settings.market.timeframe == "1h"
            assert daemon.scheduler.get_job("tick:BTC/USDT").name == "tick BTC/USDT 1h"
            assert daemon.scheduler.get_job("retrain") is not None
        finally:
            daemon.request_stop()
            th.join(20)
    assert codes == [0]
    failed = [e for e in logs if e["event"] == "reload_failed"]
    assert "retrain_cron" in failed[0]["error"] and "scheduler exploded" in failed[1]["error"]


# -- 10. status never says "all clear" when it could not read -----------------------------------------
def test_status_on_a_missing_unreadable_or_corrupt_ledger_exits_1_naming_the_file(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    import sqlite3

    from chartrl.account.ledger_conn import ledger_path
    from chartrl.daemon import status

    def one_line_error(*argv: str) -> str:
        assert _cli("status", *argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "unexpected" not in err[0] and "halts" not in err[0], err
        return err[0]

    missing = tmp_path / "nonexistent"
    assert str(missing) in one_line_error("--data-dir", str(missing))
    data = tmp_path / "data"
    data.mkdir()
    assert str(ledger_path(data)) in one_line_error("--data-dir", str(data))
    with Ledger.for_data_dir(data) as led:
        led.set_halt("balance_mismatch", "live", "test")
    assert _cli("status", "--data-dir", str(data)) == 0
    assert "balance_mismatch" in capsys.readouterr().out

    # Unreadable (what a read-only data dir gives SQLite in WAL mode): an error, not "halts none".
    class Unreadable:  # SQLite opens lazily: the failure comes with the first query
        def execute(self, *_a):
            raise sqlite3.OperationalError("unable to open database file")

        def close(self) -> None:
            pass

    real = status.open_readonly
    for fake in (
        lambda p: Unreadable(),
        lambda p: real(tmp_path / "no-such-dir" / "ledger.sqlite"),
    ):
        monkeypatch.setattr(status, "open_readonly", fake)
        line = one_line_error("--data-dir", str(data))
        assert str(ledger_path(data)) in line and "cannot read" in line
    monkeypatch.setattr(status, "open_readonly", real)
    ledger_path(data).write_bytes(b"this is not sqlite" * 100)
    for suffix in ("-wal", "-shm"):
        Path(str(ledger_path(data)) + suffix).unlink(missing_ok=True)
    line = one_line_error("--data-dir", str(data))
    assert str(ledger_path(data)) in line and "corrupt" in line and "backup" in line


# -- 6. an all-in buy survives slippage --------------------------------------------------------------
@pytest.mark.parametrize("by_cost", [True, False])
def test_an_all_in_buy_with_slippage_fills_and_never_halts(tmp_path: Path, by_cost: bool) -> None:
    with ExchangeSim(CANDLES, slippage=0.003) as sim:
        led = Ledger.for_data_dir(tmp_path)
        acc = _account(_live(sim.url), led)
        if not by_cost:  # an exchange without quoteOrderQty: sized from the ticker with a margin
            acc.exchange.has["createMarketBuyOrderWithCost"] = False
        fill = acc.execute(Action.BUY, _candle())
        assert fill is not None and fill.side == "buy"
        assert led.active_halts() == []
        spent = 10_000.0 - sim.balances()["USDT"]
        assert 0.99 * 10_000 < spent <= 10_000.0
        sent = [p for m, path, p in sim.requests if m == "POST" and path == "/api/v3/order"]
        assert ("quoteOrderQty" in sent[0]) == by_cost
        led.close()


# -- 14. operational errors inside execute() record a halt ------------------------------------------
def test_an_authentication_failure_inside_execute_records_a_halt(tmp_path: Path) -> None:
    from chartrl.errors import OperationalError, TradingHalted

    with ExchangeSim(CANDLES) as sim:
        led = Ledger.for_data_dir(tmp_path)
        acc = _account(_live(sim.url), led)
        acc.exchange.secret = "revoked"  # every signed request now fails authentication
        with pytest.raises(OperationalError) as err:
            acc.execute(Action.BUY, _candle())
        assert isinstance(err.value, TradingHalted)
        halts = led.active_halts()
        assert [h.reason for h in halts] == ["operational_error"]
        assert "fetch balance" in halts[0].details and "revoked" not in halts[0].details
        assert sim.orders() == []
        led.close()


# -- 12 and 16. paper: the market is checked at start, and API keys are never sent ------------------
def _paper(tmp_path: Path, sim: ExchangeSim, **market) -> Settings:
    from chartrl.testing.exchange_sim import DEFAULT_API_KEY, DEFAULT_API_SECRET

    return Settings.model_validate(
        {
            "exchange": {
                "api_url": sim.url,
                "api_key": DEFAULT_API_KEY,
                "api_secret": DEFAULT_API_SECRET,
                "max_retries": 0,
            },
            "market": {"since": "2020-01-01", **market},
            "data": {"dir": str(tmp_path / "data")},
            "model": {"strategy": "buyhold", "device": "cpu"},
        }
    )


def test_paper_refuses_a_market_the_exchange_does_not_list(tmp_path: Path) -> None:
    from chartrl.daemon.tick import Ticker
    from chartrl.errors import UsageError

    with ExchangeSim(CANDLES) as sim:
        with pytest.raises(UsageError, match="no market 'FOO/BAR'"):
            Ticker(_paper(tmp_path, sim, symbol="FOO/BAR"))
        Ticker(_paper(tmp_path, sim)).close()  # the listed one starts


def test_paper_never_sends_api_keys(tmp_path: Path) -> None:
    from chartrl.daemon.tick import Ticker

    with ExchangeSim(CANDLES) as sim:
        t = Ticker(_paper(tmp_path, sim))
        try:
            assert not t.exchange.apiKey and not t.exchange.secret
            t.tick()
        finally:
            t.close()
        signed = [p for _m, _path, p in sim.requests if "signature" in p or "timestamp" in p]
        assert signed == []


# -- 15. the watchdog pings only while ticks make progress ------------------------------------------
def test_the_watchdog_stops_pinging_when_the_scheduler_stops_firing(tmp_path: Path) -> None:
    import socket
    import threading

    from structlog.testing import capture_logs

    from chartrl.daemon.sdnotify import Notifier
    from chartrl.daemon.service import Daemon

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "n.sock"))
    sock.settimeout(10)
    settings = Settings.model_validate(
        {"data": {"dir": str(tmp_path)}, "daemon": {"heartbeat_seconds": 0.05}}
    )
    daemon = Daemon(
        settings, _Ticker, notifier=Notifier({"NOTIFY_SOCKET": str(tmp_path / "n.sock")})
    )
    th = threading.Thread(target=daemon.run)
    with capture_logs() as logs:
        th.start()
        try:
            assert sock.recv(4096).startswith(b"READY=1")
            assert sock.recv(4096) == b"WATCHDOG=1"
            daemon.scheduler.pause()  # the scheduler stops firing ...
            daemon._last_progress -= (
                3 * 3600
            )  # ... and three hours pass without a tick (1h candles)
            assert _wait(lambda: any(e["event"] == "ticks_stalled" for e in logs), 10)
            sock.settimeout(0.5)
            while True:  # drain what was sent before the stall was seen
                try:
                    sock.recv(4096)
                except TimeoutError:
                    break
            time.sleep(0.3)  # six heartbeats
            with pytest.raises(TimeoutError):
                sock.recv(4096)
        finally:
            daemon.request_stop()
            th.join(20)
            sock.close()


# -- 13. the retrain child is bounded in time and memory ------------------------------------------
def test_a_hung_retrain_child_is_stopped_and_runs_with_limits(tmp_path: Path, monkeypatch) -> None:
    from structlog.testing import capture_logs

    from chartrl.daemon import service, service_retrain
    from chartrl.daemon.sdnotify import Notifier

    out = tmp_path / "limits"
    probe = (
        "import resource,time,pathlib;"
        f"pathlib.Path({str(out)!r}).write_text("
        "open('/proc/self/oom_score_adj').read().strip()+' '"
        "+str(resource.getrlimit(resource.RLIMIT_AS)[0]));time.sleep(90)"
    )
    monkeypatch.setattr(
        service_retrain, "retrain_command", lambda *_a: [sys.executable, "-c", probe]
    )
    settings = Settings.model_validate(
        {
            "data": {"dir": str(tmp_path)},
            "daemon": {"retrain_timeout": 2.0, "retrain_memory_mb": 4096},
        }
    )
    daemon = service.Daemon(settings, _Ticker, notifier=Notifier({}))
    t0 = time.monotonic()
    with capture_logs() as logs:
        daemon._retrain_job()
    assert time.monotonic() - t0 < 30
    assert [e for e in logs if e["event"] == "retrain_timeout"]
    done = [e for e in logs if e["event"] == "retrain_finished"]
    assert done and done[0]["exit_code"] != 0
    oom, cap = out.read_text().split()
    assert int(oom) >= 500 and int(cap) == 4096 * 1024 * 1024


# -- 7. a lost order is looked up until the exchange knows it; halt clear imports its fills ---------
def _late_order_sim() -> ExchangeSim:
    from chartrl.testing.exchange_sim.faults import FaultPlan

    plan = FaultPlan()
    # The request lands 3 s late, after the client (1 s timeout) gave up on it.
    plan.add("/api/v3/order", "timeout", 1, None, method="POST", ms=3000)
    return ExchangeSim(CANDLES, faults=plan)


def _wait_for_fill(sim: ExchangeSim) -> None:
    assert _wait(lambda: len(sim.trades()) == 1, 20)


def test_a_late_order_is_found_by_later_lookups_not_declared_lost(tmp_path: Path) -> None:
    from chartrl.errors import TemporaryError

    with _late_order_sim() as sim:
        led = Ledger.for_data_dir(tmp_path)
        settings = _live(sim.url, order_lost_deadline_seconds=120.0)
        settings = settings.model_copy(
            update={"exchange": settings.exchange.model_copy(update={"timeout_ms": 1000})}
        )
        acc = _account(settings, led)
        with pytest.raises(TemporaryError):
            acc.execute(Action.BUY, _candle())
        assert led.orders("live")[0].state == "unknown"
        with pytest.raises(TemporaryError):  # still lost: nothing new is sent meanwhile
            acc.execute(Action.BUY, _candle())
        _wait_for_fill(sim)
        deadline = time.monotonic() + 30
        while True:  # the backoff decides when the next look-up is due
            try:
                acc.execute(Action.HOLD, _candle())
                break
            except TemporaryError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        assert led.orders("live")[0].state == "filled" and len(led.fills("live")) == 1
        assert led.active_halts() == [] and acc.position > 0
        assert len(sim.orders()) == 1
        led.close()


def test_halt_clear_after_a_mismatch_imports_the_fills_of_a_given_up_order(
    tmp_path: Path, capsys
) -> None:
    from chartrl.errors import OperationalError

    with _late_order_sim() as sim:
        led = Ledger.for_data_dir(tmp_path)
        settings = _live(sim.url, order_lost_deadline_seconds=0.0)  # gives up at the grace
        settings = settings.model_copy(
            update={"exchange": settings.exchange.model_copy(update={"timeout_ms": 1000})}
        )
        acc = _account(settings, led)
        assert acc.execute(Action.BUY, _candle()) is None  # declared never-arrived (too early)
        assert led.orders("live")[0].state == "rejected"
        _wait_for_fill(sim)
        with pytest.raises(OperationalError, match="balance_mismatch"):
            acc.execute(Action.HOLD, _candle())
        assert _cli("halt", "--data-dir", str(tmp_path), "clear") == 0
        capsys.readouterr()
        assert acc.execute(Action.HOLD, _candle()) is None  # restarts: imports, then re-baselines
        assert led.orders("live")[0].state == "filled" and len(led.fills("live")) == 1
        bought = led.fills("live")[0].amount
        assert acc.position > 0.99 * bought and led.active_halts() == []
        led.close()


# -- 11. a malformed new champion keeps the old model trading ------------------------------------
def test_a_malformed_new_champion_is_refused_and_the_old_model_trades_on(tmp_path: Path) -> None:
    import shutil

    import torch
    from structlog.testing import capture_logs

    from chartrl.chart.spec import ChartSpec
    from chartrl.daemon.retrain import promote
    from chartrl.daemon.tick import Ticker
    from chartrl.strategies.registry import build_policy
    from chartrl.testing.exchange_sim.clock import SimClock
    from chartrl.train.checkpoint import save_model

    spec = {"window": 30, "height": 32, "width": 32, "ma_periods": [5, 10]}
    spec |= {"bollinger_period": 10, "rsi_period": 6}
    candles = synthetic_candles(400, seed=5)
    open_ms = int(candles["timestamp"].iloc[300].value // 1_000_000)
    with ExchangeSim(candles, clock=SimClock(open_ms + 3_600_000 + 5_000)) as sim:
        settings = Settings.model_validate(
            {
                "exchange": {"api_url": sim.url, "retry_base_delay": 0.0, "max_retries": 1},
                "market": {"since": "2020-01-01"},
                "data": {"dir": str(tmp_path / "data")},
                "chart": spec,
                "model": {"strategy": "cnn", "device": "cpu"},
            }
        )
        torch.manual_seed(0)
        policy = build_policy("cnn", ChartSpec(**spec), widths=(4, 8), feat_dim=16)
        series = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}
        save_model(settings.model_dir, policy, {"chart_spec": ChartSpec(**spec), "series": series})
        t = Ticker(settings, clock=sim.clock)
        try:
            assert t.tick().status == "done"
            old = t.runner.version
            bad = settings.model_dir.with_name(".challenger")
            shutil.copytree(settings.model_dir, bad)
            meta = json.loads((bad / "model.json").read_text())
            (bad / "model.json").write_text(json.dumps(meta | {"series": "BTC/USDT"}))
            promote(bad, settings.model_dir)
            sim.clock.advance(3_600_000)
            with capture_logs() as logs:
                result = t.tick()
            assert result.status == "done" and result.action is not None
            assert t.runner.version == old
            failed = [e for e in logs if e["event"] == "model_reload_failed"]
            assert failed and "model.json" in failed[0]["error"] and "series" in failed[0]["error"]
        finally:
            t.close()


# -- 9. status shows the balances after the last order ---------------------------------------------
def test_status_shows_the_position_right_after_a_live_buy(tmp_path: Path) -> None:
    from chartrl.daemon.status import read_status

    with ExchangeSim(CANDLES) as sim:
        led = Ledger.for_data_dir(tmp_path)
        acc = _account(_live(sim.url), led)
        assert acc.execute(Action.BUY, _candle()) is not None
        st = read_status(tmp_path, symbol="BTC/USDT", mode="live")
        assert st.position == pytest.approx(sim.balances()["BTC"]) and st.position > 0
        assert st.cash == pytest.approx(sim.balances()["USDT"])
        led.close()


# -- 4. the exchange's clock decides which candle has closed -------------------------------------
@pytest.mark.parametrize("ahead_s", [10, 60])
def test_a_candle_is_final_by_the_exchanges_clock(tmp_path: Path, ahead_s: int) -> None:
    from chartrl.daemon.clock import FixedClock
    from chartrl.daemon.tick import Ticker
    from chartrl.market.candles import to_ms
    from chartrl.testing.exchange_sim.clock import SimClock

    candles = synthetic_candles(400, seed=5)
    forming = int(candles["timestamp"].iloc[300].value // 1_000_000)
    exchange_now = forming + 3_600_000 - 5_000  # candle 300 closes in 5 s, by the exchange
    with ExchangeSim(candles, clock=SimClock(exchange_now)) as sim:
        s = _paper(tmp_path, sim)
        s = s.model_copy(update={"exchange": s.exchange.model_copy(update={"api_key": None})})
        t = Ticker(s, clock=FixedClock(exchange_now + ahead_s * 1000))  # our clock runs ahead
        try:
            result = t.tick()
            last = t.store.last_timestamp("binance", "BTC/USDT", "1h")
        finally:
            t.close()
    assert last is None or int(to_ms(last)) < forming  # the forming candle was never stored
    if ahead_s < s.daemon.max_clock_skew_seconds:
        assert result.status == "done" and result.candle_ms == forming - 3_600_000
    else:
        assert result.status == "missed" and result.reason == "clock_skew"
        assert Ledger.for_data_dir(s.data_dir).decisions("BTC/USDT") == []


# -- 5. a bad print is quarantined, never stored or traded on -------------------------------------
def test_a_50x_print_on_the_newest_candle_is_quarantined_then_dropped(tmp_path: Path) -> None:
    from chartrl.daemon.tick import Ticker
    from chartrl.market.candles import to_ms
    from chartrl.testing.exchange_sim.clock import SimClock

    candles = synthetic_candles(400, seed=5)
    candles.loc[300, ["high", "close"]] = candles.loc[300, "close"] * 50
    bad = int(candles["timestamp"].iloc[300].value // 1_000_000)
    hour = 3_600_000
    with ExchangeSim(candles, clock=SimClock(bad + hour + 5_000)) as sim:
        s = _paper(tmp_path, sim)
        t = Ticker(s, clock=sim.clock)
        try:
            first = t.tick()
            assert first.status == "missed" and first.reason == "price_quarantined"
            stored = t.store.load("binance", "BTC/USDT", "1h")
            assert int(to_ms(stored["timestamp"].iloc[-1])) == bad - hour
            sim.clock.advance(hour)  # the next candle is back at the trusted level
            second = t.tick()
            assert second.status == "done" and second.candle_ms == bad + hour
            stored = t.store.load("binance", "BTC/USDT", "1h")
            assert bad not in {int(to_ms(x)) for x in stored["timestamp"]}
            assert stored["close"].max() < 2 * stored["close"].median()
            prices = [d["price"] for d in t.ledger.decisions("BTC/USDT")]
            assert prices and max(prices) < 2 * float(candles["close"].iloc[299])
        finally:
            t.close()


# -- 8. a stuck partial fill is cancelled; a failed cancel halts with the reason ------------------
@pytest.mark.parametrize("cancel_fails", [False, True])
def test_a_stuck_partial_fill_is_cancelled_or_halts(tmp_path: Path, cancel_fails: bool) -> None:
    import ccxt

    from chartrl.errors import TemporaryError, TradingHalted

    with ExchangeSim(CANDLES, partial_fills=1000) as sim:
        led = Ledger.for_data_dir(tmp_path)
        acc = _account(_live(sim.url, cancel_after_seconds=0.5), led)
        acc.execute(Action.BUY, _candle())
        order = led.orders("live")[0]
        assert order.state == "partially_filled"
        if cancel_fails:

            def refuse(*_a, **_k):
                raise ccxt.ExchangeError("binance cancel refused")

            acc.exchange.cancel_order = refuse
        time.sleep(0.6)
        if cancel_fails:
            with pytest.raises(TradingHalted, match="cancel_failed"):
                acc.execute(Action.HOLD, _candle())
            assert [h.reason for h in led.active_halts()] == ["cancel_failed"]
            return
        try:
            acc.execute(Action.HOLD, _candle())
        except TemporaryError:
            acc.execute(Action.HOLD, _candle())
        order = led.order(order.client_order_id)
        assert order.state == "canceled" and "canceled by chartrl" in order.error
        assert [o["status"] for o in sim.orders()] == ["CANCELED"]
        assert led.active_halts() == [] and acc.position > 0
        fill = acc.execute(Action.SELL, _candle())  # trading goes on with what it did buy
        assert fill is not None and fill.side == "sell"
        led.close()


# -- beyond the list: property-based bookkeeping (hypothesis) ---------------------------------------

_ACTIONS = st.lists(st.sampled_from([Action.BUY, Action.SELL, Action.HOLD]), min_size=1, max_size=5)
_FAULTS = st.lists(
    st.sampled_from(["drop_response", "reset", "503", "none"]), min_size=1, max_size=5
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=_ACTIONS, faults=_FAULTS, external=st.sampled_from([0.0, 3.0]), data=st.data())
def test_bookkeeping_survives_lost_shuffled_and_duplicated_updates(
    tmp_path_factory, actions, faults, external, data
) -> None:
    """Faults on order submission (answer dropped after the order is placed, connection reset
    before it, a 5xx after it was processed), then the exchange's order updates replayed in a
    shuffled, duplicated order with some dropped. Whatever happens: the position is the sum of
    the bot's own fills, no client id reached the exchange twice, the operator's coins are
    untouched, and after reconciliation the ledger agrees with the exchange."""
    from chartrl.errors import TemporaryError
    from chartrl.testing.exchange_sim.faults import FaultPlan

    plan = FaultPlan()
    for kind in faults:
        if kind != "none":
            plan.add("/api/v3/order", kind, 1, None, method="POST", process=kind != "reset")
    tmp = tmp_path_factory.mktemp("prop")
    with ExchangeSim(CANDLES, faults=plan, balances={"USDT": 10_000.0, "BTC": external}) as sim:
        led = Ledger.for_data_dir(tmp)
        acc = _account(_live(sim.url, order_lost_deadline_seconds=0.0), led)
        for action in actions:
            try:
                acc.execute(action, _candle())
            except TemporaryError:
                pass  # an ambiguous send: looked up, never re-sent
        deadline = time.monotonic() + 20
        while acc.reconcile() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert acc.reconcile() == []
        # Replay what the exchange says of every order, shuffled, duplicated and thinned.
        remote = [
            acc.exchange.fetch_order(None, "BTC/USDT", {"clientOrderId": o["clientOrderId"]})
            for o in sim.orders()
        ]
        updates = data.draw(st.lists(st.sampled_from(remote), max_size=8)) if remote else []
        for r in updates:
            order = led.order(r["clientOrderId"])
            trades = data.draw(st.permutations(r.get("trades") or []))
            acc._apply(order, r | {"trades": list(trades) + list(trades[:1])})
        fills = led.fills("live")
        # No client id was sent twice; every exchange order is in the ledger with its fills.
        cids = [o["clientOrderId"] for o in sim.orders()]
        assert len(cids) == len(set(cids))
        assert {str(t["id"]) for t in sim.trades()} == {f.trade_id for f in fills}
        for o in sim.orders():
            assert led.order(o["clientOrderId"]).filled == pytest.approx(float(o["executedQty"]))
        # The position is the sum of the bot's own fills; the operator's coins are untouched.
        held = sum((1 if f.side == "buy" else -1) * f.amount for f in fills) - sum(
            f.fee for f in fills if f.fee_currency == "BTC"
        )
        assert held >= -1e-9  # it never sold more than its own fills bought
        acc.refresh_balances()
        assert acc.position == pytest.approx(max(held, 0.0), abs=1e-9)
        assert sim.balances()["BTC"] == pytest.approx(external + held, abs=1e-9)
        assert acc.check_balances().ok
        led.close()


# -- 19. one misfire, one tick_missed event --------------------------------------------------------
def test_one_scheduler_misfire_gives_one_tick_missed_event(tmp_path: Path) -> None:
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from structlog.testing import capture_logs

    from chartrl.daemon.sdnotify import Notifier
    from chartrl.daemon.service import Daemon
    from chartrl.daemon.tick import Ticker
    from chartrl.testing.exchange_sim.clock import SimClock

    candles = synthetic_candles(400, seed=5)
    hour = 3_600_000
    first = int(candles["timestamp"].iloc[300].value // 1_000_000)
    with ExchangeSim(candles, clock=SimClock(first + hour + 5_000)) as sim:
        s = _paper(tmp_path, sim)
        t = Ticker(s, clock=sim.clock)
        daemon = Daemon(s, lambda _s: t, notifier=Notifier({}))
        daemon.ticker = t
        try:
            assert t.tick().status == "done"
            with capture_logs() as logs:
                # The run due after the next candle closed was skipped by the scheduler ...
                when = datetime.fromtimestamp((first + 2 * hour + 5_000) / 1000, UTC)
                daemon._on_missed(SimpleNamespace(job_id="tick:BTC/USDT", scheduled_run_time=when))
                sim.clock.advance(2 * hour)  # ... and the one after it runs
                assert t.tick().status == "done"
        finally:
            t.close()
    assert sum(e["event"] == "tick_missed" for e in logs) == 1
    assert t.missed == 1


def test_halt_show_on_a_newer_ledger_says_upgrade_not_migrate(tmp_path: Path, capsys) -> None:
    import sqlite3

    from chartrl.account.ledger_conn import ledger_path

    Ledger.for_data_dir(tmp_path).close()
    conn = sqlite3.connect(ledger_path(tmp_path))
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    assert _cli("halt", "--data-dir", str(tmp_path), "show") == 1
    err = capsys.readouterr().err
    assert "upgrade chartrl" in err and "start the daemon" not in err, err


def test_units_do_not_restart_a_configuration_error_and_agree_with_the_readme() -> None:
    root = Path(__file__).resolve().parents[1]
    for unit in ("chartrl.service", "chartrl-user.service"):
        assert "RestartPreventExitStatus=2" in (root / "systemd" / unit).read_text()
    header = (root / "systemd" / "chartrl.service").read_text()
    readme = (root / "README.md").read_text()
    for line in (
        "install -d -m 0750 -o root -g chartrl /etc/chartrl",
        "install -m 0640 -o root -g chartrl config/chartrl.toml /etc/chartrl/chartrl.toml",
    ):
        assert line in readme and line in header, line
