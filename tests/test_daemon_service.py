"""The daemon service: triggers, the scheduler's tick/missed/retrain jobs, signals and sd_notify.

The ticker here is a recording double: the service must not care what a tick does, only when it
runs and how the process behaves. The tick itself is tested in test_daemon.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chartrl.config.settings import Settings
from chartrl.daemon.sdnotify import Notifier
from chartrl.daemon.service import Daemon, start_with_retry
from chartrl.daemon.service_retrain import retrain_command
from chartrl.daemon.status import read_daemon_state
from chartrl.daemon.triggers import retrain_trigger, tick_trigger
from chartrl.errors import OperationalError, TemporaryError

UTC = UTC


def _next(trigger, now):
    return trigger.get_next_fire_time(None, now)


def test_tick_trigger_fires_after_each_candle_close():
    t = tick_trigger("1h", 5)
    assert _next(t, datetime(2024, 3, 1, 10, 17, tzinfo=UTC)) == datetime(
        2024, 3, 1, 11, 0, 5, tzinfo=UTC
    )
    assert _next(t, datetime(2024, 3, 1, 11, 0, 5, tzinfo=UTC)) == datetime(
        2024, 3, 1, 11, 0, 5, tzinfo=UTC
    )
    t15 = tick_trigger("15m", 2.5)
    assert _next(t15, datetime(2024, 3, 1, 10, 16, tzinfo=UTC)) == datetime(
        2024, 3, 1, 10, 30, 2, 500000, tzinfo=UTC
    )
    t4h = tick_trigger("4h", 0)
    assert _next(t4h, datetime(2024, 3, 1, 1, 0, tzinfo=UTC)) == datetime(
        2024, 3, 1, 4, 0, tzinfo=UTC
    )
    day = tick_trigger("1d", 30)
    assert _next(day, datetime(2024, 3, 1, 1, 0, tzinfo=UTC)) == datetime(
        2024, 3, 2, 0, 0, 30, tzinfo=UTC
    )


def test_weekly_and_monthly_triggers_follow_the_calendar():
    week = tick_trigger("1w", 10)
    # 2024-03-01 is a Friday; weekly candles open on Monday 00:00 UTC.
    assert _next(week, datetime(2024, 3, 1, tzinfo=UTC)) == datetime(
        2024, 3, 4, 0, 0, 10, tzinfo=UTC
    )
    month = tick_trigger("1M", 10)
    assert _next(month, datetime(2024, 3, 5, tzinfo=UTC)) == datetime(
        2024, 4, 1, 0, 0, 10, tzinfo=UTC
    )
    with pytest.raises(OperationalError):
        tick_trigger("2w", 0)


def test_retrain_trigger_is_utc_cron_and_refuses_nonsense():
    t = retrain_trigger("0 3 * * *")
    assert _next(t, datetime(2024, 3, 1, 5, 0, tzinfo=UTC)) == datetime(
        2024, 3, 2, 3, 0, tzinfo=UTC
    )
    with pytest.raises(OperationalError, match="retrain_cron"):
        retrain_trigger("every night")


def test_retrain_job_runs_the_cli_in_a_child_process(tmp_path: Path, monkeypatch):
    from structlog.testing import capture_logs

    from chartrl.account.ledger import Ledger

    monkeypatch.delenv("CHARTRL_DATA_DIR")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndir = "{tmp_path / "config-data"}"\n')
    overrides = [
        "--data-dir",
        str(tmp_path / "data"),
    ]  # `chartrl run --data-dir ...` wins over the config
    cmd = retrain_command(cfg, overrides)
    assert cmd[:3] == [sys.executable, "-m", "chartrl"] and "retrain" in cmd and str(cfg) in cmd
    daemon = Daemon(
        _settings(tmp_path / "data"),
        RecordingTicker,
        config_path=cfg,
        notifier=Notifier({}),
        cli_overrides=overrides,
    )
    with capture_logs() as logs:
        daemon._retrain_job()  # no champion yet: the child records a failed cycle and exits 1
    done = [e for e in logs if e["event"] == "retrain_finished"]
    assert done and done[0]["exit_code"] == 1
    with Ledger.for_data_dir(tmp_path / "data") as led:
        rows = led.retrain_results()
    assert rows[0]["status"] == "failed" and "no champion" in rows[0]["error"]
    assert not (tmp_path / "config-data").exists()


def test_chartrl_run_hands_its_overrides_to_the_retrain_child(tmp_path: Path, monkeypatch):
    from chartrl.cli import main

    seen = []
    monkeypatch.setattr(
        Daemon,
        "run",
        lambda self: seen.append(retrain_command(self.config_path, self.cli_overrides)) or 0,
    )
    with pytest.raises(SystemExit) as exc:
        main(
            ["run", "--data-dir", str(tmp_path / "x"), "--symbol", "ETH/USDT", "--timeframe", "4h"]
        )
    assert exc.value.code == 0
    assert seen[0][-6:] == [
        "--symbol",
        "ETH/USDT",
        "--timeframe",
        "4h",
        "--data-dir",
        str(tmp_path / "x"),
    ]


def test_start_up_retries_end_within_their_budget():
    calls = []

    def unreachable():
        calls.append(time.monotonic())
        raise TemporaryError("exchange unreachable")

    t0 = time.monotonic()
    with pytest.raises(TemporaryError, match="gave up after 1 s of start-up retries"):
        start_with_retry(unreachable, threading.Event(), budget_seconds=1.0)
    assert len(calls) >= 2 and time.monotonic() - t0 < 2.5


class RecordingTicker:
    instances: list[RecordingTicker] = []

    def __init__(self, settings: Settings, fail: bool = False) -> None:
        self.settings = settings
        self.ticks = 0
        self.missed: list[int] = []
        self.closed = False
        self.fail = fail
        RecordingTicker.instances.append(self)

    def tick(self):
        self.ticks += 1
        if self.fail:
            raise RuntimeError("boom")

    def record_missed(self, scheduled_ms: int, reason: str) -> None:
        self.missed.append(scheduled_ms)

    def status_text(self) -> str:
        return f"paper {self.settings.market.symbol} ticks {self.ticks}"

    def close(self) -> None:
        self.closed = True


def _settings(tmp_path: Path, **daemon) -> Settings:
    return Settings.model_validate(
        {"data": {"dir": str(tmp_path)}, "daemon": {"heartbeat_seconds": 0.05, **daemon}}
    )


def _wait(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def notify_socket(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(10)
    yield sock, str(path)
    sock.close()


def test_daemon_schedules_ticks_records_missed_runs_and_stops_cleanly(
    tmp_path: Path, notify_socket
):
    sock, path = notify_socket
    RecordingTicker.instances.clear()
    daemon = Daemon(
        _settings(tmp_path), RecordingTicker, notifier=Notifier({"NOTIFY_SOCKET": path})
    )
    code: list[int] = []
    th = threading.Thread(target=lambda: code.append(daemon.run()))
    th.start()
    try:
        assert sock.recv(4096).startswith(b"READY=1\nSTATUS=paper BTC/USDT")
        assert sock.recv(4096) == b"WATCHDOG=1"
        job = daemon.scheduler.get_job("tick:BTC/USDT")
        assert job.max_instances == 1 and job.coalesce is True and job.misfire_grace_time > 0
        assert daemon.scheduler.get_job("retrain") is not None
        ticker = RecordingTicker.instances[0]
        now = datetime.now(UTC)
        job.modify(next_run_time=now)
        assert _wait(lambda: ticker.ticks == 1)
        # A run far later than the grace time is missed: logged and handed to the ticker.
        job.modify(next_run_time=now - timedelta(hours=3, minutes=20))  # last due run: 20 min late
        assert _wait(lambda: len(ticker.missed) == 1)
        assert _wait(lambda: read_daemon_state(tmp_path).get("ticks_done") == 1)
        state = read_daemon_state(tmp_path)
        assert state["pid"] == os.getpid() and state["next_tick"]
    finally:
        daemon.request_stop()
        th.join(10)
    assert code == [0] and ticker.closed
    msgs = []
    sock.settimeout(0.5)
    try:
        while True:
            msgs.append(sock.recv(4096))
    except TimeoutError:
        pass
    assert any(m.startswith(b"STOPPING=1") for m in msgs)
    assert read_daemon_state(tmp_path)["pid"] is None


def test_a_crashing_tick_does_not_stop_the_daemon(tmp_path: Path):
    RecordingTicker.instances.clear()
    daemon = Daemon(
        _settings(tmp_path, retrain_enabled=False),
        lambda s: RecordingTicker(s, fail=True),
        notifier=Notifier({}),
    )
    th = threading.Thread(target=daemon.run)
    th.start()
    try:
        assert _wait(lambda: daemon.scheduler is not None and daemon.scheduler.running)
        assert daemon.scheduler.get_job("retrain") is None
        ticker = RecordingTicker.instances[0]
        for n in (1, 2):
            # Re-poke until it runs: the previous run may still count as an instance for a moment.
            for _ in range(20):
                daemon.scheduler.get_job("tick:BTC/USDT").modify(next_run_time=datetime.now(UTC))
                if _wait(lambda n=n: ticker.ticks == n, 1.0):
                    break
            assert ticker.ticks == n
        assert daemon.scheduler.running
    finally:
        daemon.request_stop()
        th.join(10)


def test_reload_with_a_new_symbol_removes_the_old_symbols_jobs(tmp_path: Path):
    RecordingTicker.instances.clear()
    eth = Settings.model_validate(
        {
            "data": {"dir": str(tmp_path)},
            "market": {"symbol": "ETH/USDT"},
            "daemon": {"heartbeat_seconds": 0.05, "retrain_enabled": False},
        }
    )
    daemon = Daemon(
        _settings(tmp_path, retrain_enabled=False),
        RecordingTicker,
        reload_settings=lambda: eth,
        notifier=Notifier({}),
    )
    th = threading.Thread(target=daemon.run)
    th.start()
    try:
        assert _wait(lambda: daemon.scheduler is not None and daemon.scheduler.running)
        later = datetime.now(UTC) + timedelta(hours=1)
        daemon.scheduler.add_job(
            daemon._tick_job, "date", run_date=later, args=["BTC/USDT"], id="retry:BTC/USDT"
        )
        daemon.request_reload()  # what SIGHUP does
        assert _wait(lambda: daemon.scheduler.get_job("tick:ETH/USDT") is not None)
        assert sorted(j.id for j in daemon.scheduler.get_jobs()) == ["tick:ETH/USDT"]
    finally:
        daemon.request_stop()
        th.join(10)


class StuckTicker(RecordingTicker):
    release = threading.Event()

    def tick(self):
        self.ticks += 1
        StuckTicker.release.wait(30)


def test_a_stuck_tick_stops_the_watchdog_pings(tmp_path: Path, notify_socket):
    """Whatever the timeframe (1h here: two candles would be two hours), after daemon.stuck_tick_seconds."""
    from structlog.testing import capture_logs

    sock, path = notify_socket
    StuckTicker.release.clear()
    settings = _settings(tmp_path, retrain_enabled=False, stuck_tick_seconds=0.5)
    daemon = Daemon(settings, StuckTicker, notifier=Notifier({"NOTIFY_SOCKET": path}))
    th = threading.Thread(target=daemon.run)

    def drain(seconds: float) -> list[bytes]:
        out, end = [], time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                out.append(sock.recv(4096))
            except TimeoutError:
                break
        return out

    with capture_logs() as logs:
        th.start()
        try:
            assert sock.recv(4096).startswith(b"READY=1")
            daemon.scheduler.get_job("tick:BTC/USDT").modify(next_run_time=datetime.now(UTC))
            assert _wait(lambda: daemon._tick_started is not None)
            assert b"WATCHDOG=1" in drain(0.3)  # stuck for less than the limit: still pinging
            drain(1.0)  # well past the limit
            assert b"WATCHDOG=1" not in drain(1.0)
            StuckTicker.release.set()
            assert b"WATCHDOG=1" in drain(2.0)  # the tick ended: healthy again
        finally:
            StuckTicker.release.set()
            daemon.request_stop()
            th.join(10)
    stuck = [e for e in logs if e["event"] == "tick_stuck"]
    assert len(stuck) == 1 and stuck[0]["limit"] == 0.5 and "systemd restarts" in stuck[0]["action"]


_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from datetime import datetime, timezone
    from chartrl.config import load_settings
    from chartrl.daemon.service import Daemon

    out = Path(sys.argv[1])
    class SlowTicker:
        def __init__(self, settings):
            self.settings = settings
            with open(out / "built", "a") as f:
                f.write(settings.market.timeframe + "\\n")
        def tick(self):
            (out / "tick_started").write_text("1")
            time.sleep(1.5)
            (out / "tick_finished").write_text("1")
        def record_missed(self, ms, reason): pass
        def status_text(self): return "test"
        def close(self): (out / "closed").write_text("1")

    cfg = out / "c.toml"
    settings = load_settings(cfg)
    d = Daemon(settings, SlowTicker, config_path=cfg, reload_settings=lambda: load_settings(cfg))
    import threading
    def kick():
        while d.scheduler is None or not d.scheduler.running:
            time.sleep(0.01)
        (out / "ready").write_text("1")
        while not (out / "go").exists():
            time.sleep(0.01)
        d.scheduler.get_job("tick:BTC/USDT").modify(next_run_time=datetime.now(timezone.utc))
    threading.Thread(target=kick, daemon=True).start()
    sys.exit(d.run())
    """
)


def _wait_file(p: Path, timeout=30.0) -> bool:
    return _wait(p.exists, timeout)


def test_sighup_reloads_and_sigterm_finishes_the_running_tick(tmp_path: Path):
    (tmp_path / "d.py").write_text(_SCRIPT)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[data]\ndir = "{tmp_path / "data"}"\n[daemon]\nheartbeat_seconds = 0.1\nretrain_enabled = false\n'
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHARTRL", "NOTIFY_SOCKET", "WATCHDOG"))
    }
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "d.py"), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _wait_file(tmp_path / "ready"), (
            proc.stdout.read() if proc.poll() is not None else "no ready"
        )
        # SIGHUP: the configuration is read again and a new ticker built from it.
        cfg.write_text(cfg.read_text() + '[market]\ntimeframe = "4h"\n')
        proc.send_signal(signal.SIGHUP)
        assert _wait(
            lambda: (
                (tmp_path / "built").exists()
                and (tmp_path / "built").read_text().split() == ["1h", "4h"]
            )
        )
        assert _wait(
            lambda: (
                json.loads((tmp_path / "data" / "daemon.json").read_text()).get("timeframe") == "4h"
            )
        )
        (tmp_path / "go").write_text("1")
        assert _wait_file(tmp_path / "tick_started")
        proc.send_signal(signal.SIGTERM)  # mid-tick: the tick must finish first
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert (tmp_path / "tick_finished").exists() and (tmp_path / "closed").exists()
    assert "daemon_stopped" in out


def test_chartrl_run_speaks_sd_notify_and_stops_on_sigterm(tmp_path: Path):
    """The real command, as systemd starts it: READY=1 after the start-up checks, watchdog pings,
    a STATUS line, and STOPPING=1 + exit 0 on SIGTERM."""
    from chartrl.testing.exchange_sim import ExchangeSim
    from chartrl.testing.synthetic import synthetic_candles

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(60)
    with ExchangeSim(synthetic_candles(300, seed=1)) as sim:
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'[exchange]\napi_url = "{sim.url}"\n[data]\ndir = "{tmp_path / "data"}"\n'
            '[model]\nstrategy = "buyhold"\n[daemon]\nheartbeat_seconds = 0.2\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARTRL", "WATCHDOG"))}
        env |= {
            "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
            "WATCHDOG_USEC": "1000000",
            "WATCHDOG_PID": "",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "chartrl", "--config", str(cfg), "--log-format", "json", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            first = sock.recv(4096).decode()
            assert first.startswith("READY=1\nSTATUS=paper BTC/USDT 1h"), first
            assert sock.recv(4096) == b"WATCHDOG=1"
            state = read_daemon_state(tmp_path / "data")
            assert state["pid"] == proc.pid and state["mode"] == "paper" and state["next_tick"]
            proc.send_signal(signal.SIGTERM)
            msgs = []
            while not any(m.startswith(b"STOPPING=1") for m in msgs):
                msgs.append(sock.recv(4096))
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            sock.close()
    assert proc.returncode == 0, out
    assert '"event": "daemon_started"' in out and '"event": "daemon_stopped"' in out
