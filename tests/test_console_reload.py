"""``[console]`` follows the daemon's SIGHUP reload: a new token, a new port, enabled on and off;
what cannot be applied leaves the console serving as it was."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
from structlog.testing import capture_logs

from chartrl.config.settings import Settings
from chartrl.console.server import follow

A = "console-reload-token-AAAA-0001"
B = "console-reload-token-BBBB-0002"


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def _settings(root: Path, **console) -> Settings:
    return Settings.model_validate({"data": {"dir": str(root / "data")}, "console": console})


def _status(port: int, token: str) -> int | None:
    """The HTTP status of /api/status on ``port`` with ``token``: 401 refused, 503 let in (no
    ledger yet, nothing has traded); None: nothing listens."""
    try:
        r = httpx.get(
            f"http://127.0.0.1:{port}/api/status",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.TransportError:
        return None
    return r.status_code


def _until(cond, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_follow_swaps_the_token_moves_the_port_and_keeps_what_it_cannot_change(tmp_path):
    p1, p2 = _free_port(), _free_port()
    c = follow(None, _settings(tmp_path, enabled=True, port=p1, token=A))
    try:
        assert c is not None and _until(lambda: _status(p1, A) == 503)
        # A new token: the same listener, the old token refused from the next request on.
        same = follow(c, _settings(tmp_path, enabled=True, port=p1, token=B))
        assert same is c and _status(p1, B) == 503 and _status(p1, A) == 401
        # A new port: the new listener serves, the old one is closed.
        c = follow(c, _settings(tmp_path, enabled=True, port=p2, token=B))
        assert c.port == p2 and _until(lambda: _status(p2, B) == 503)
        assert _until(lambda: _status(p1, B) is None)
        # A port in use, a public address without a token: logged, the console serves on as it was.
        with capture_logs() as events, socket.create_server(("127.0.0.1", 0)) as busy:
            taken = busy.getsockname()[1]
            kept = follow(c, _settings(tmp_path, enabled=True, port=taken, token=B))
            assert kept is c and _status(p2, B) == 503
            kept = follow(c, _settings(tmp_path, enabled=True, host="0.0.0.0", port=p2))
            assert kept is c and _status(p2, B) == 503
        failures = [e for e in events if e["event"] == "console_reload_failed"]
        assert [f["kept"] for f in failures] == [c.url, c.url]
        assert f"cannot listen on 127.0.0.1:{taken}" in failures[0]["error"]
        assert "without a token" in failures[1]["error"]
        # enabled = false: stopped.
        assert follow(c, _settings(tmp_path, enabled=False, port=p2, token=B)) is None
        assert _until(lambda: _status(p2, B) is None)
        c = None
    finally:
        if c is not None:
            c.stop(wait=10)
    assert follow(None, _settings(tmp_path)) is None  # disabled and not running: nothing to do


_RUN = textwrap.dedent(
    """
    import sys
    import chartrl.daemon.symbol_tickers as symbol_tickers

    class Ticker:  # the trading is not under test: the console beside it is
        def __init__(self, settings): self.settings = settings
        def tick(self): pass
        def record_missed(self, ms, reason): pass
        def status_text(self): return "test"
        def close(self): pass

    symbol_tickers.ticker_factory = lambda live: Ticker  # what `chartrl run` builds its ticks with
    from chartrl.cli import main
    main(sys.argv[1:])
    """
)


def test_chartrl_run_reloads_the_console_on_sighup(tmp_path):
    p1, p2 = _free_port(), _free_port()
    token_file = tmp_path / "console.token"
    token_file.write_text(f'token = "{A}"\n')
    token_file.chmod(0o600)
    cfg = tmp_path / "c.toml"
    base = (
        f'[data]\ndir = "{tmp_path / "data"}"\n'
        "[daemon]\nheartbeat_seconds = 0.1\nretrain_enabled = false\n"
    )
    console = f'[console]\nenabled = true\ntoken_file = "{token_file}"\n'
    cfg.write_text(base + console + f"port = {p1}\n")
    (tmp_path / "run.py").write_text(_RUN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARTRL", "NOTIFY_SOCKET"))}
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "run.py"), "--log-format", "json", "--config", str(cfg)]
        + ["run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _until(lambda: _status(p1, A) == 503 or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()[0]
        # Rotate the token and move the port, then SIGHUP: no restart of the daemon.
        token_file.write_text(f'token = "{B}"\n')
        cfg.write_text(base + console + f"port = {p2}\n")
        proc.send_signal(signal.SIGHUP)
        assert _until(lambda: _status(p2, B) == 503)
        assert _status(p2, A) == 401 and _until(lambda: _status(p1, B) is None)
        cfg.write_text(base + console.replace("enabled = true", "enabled = false"))
        proc.send_signal(signal.SIGHUP)
        assert _until(lambda: _status(p2, B) is None)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert out.count('"event": "reloaded"') == 2 and '"event": "console_stopped"' in out
    assert f'"url": "http://127.0.0.1:{p2}/"' in out and A not in out and B not in out


class _Ticker:
    def __init__(self, settings):
        self.settings = settings

    def tick(self):
        pass

    def record_missed(self, ms, reason):
        pass

    def status_text(self):
        return "test"

    def close(self):
        pass


def test_the_daemon_tells_the_console_only_of_a_reload_that_took(tmp_path):
    import threading

    from chartrl.daemon.sdnotify import Notifier
    from chartrl.daemon.service import Daemon
    from chartrl.errors import ConfigError

    def settings(symbol: str) -> Settings:
        return Settings.model_validate(
            {
                "data": {"dir": str(tmp_path / "data")},
                "market": {"symbol": symbol},
                "daemon": {"heartbeat_seconds": 0.05, "retrain_enabled": False},
            }
        )

    sources = [ConfigError("console.port: bad"), settings("ETH/USDT"), settings("SOL/USDT")]
    told: list[str] = []

    def reload() -> Settings:
        nxt = sources.pop(0)
        if isinstance(nxt, Exception):
            raise nxt
        return nxt

    def hook(new: Settings) -> None:
        told.append(new.market.symbol)
        if new.market.symbol == "ETH/USDT":
            raise RuntimeError("the console broke")  # must not stop the daemon

    d = Daemon(settings("BTC/USDT"), _Ticker, reload_settings=reload, notifier=Notifier({}))
    d.on_reload = hook
    th = threading.Thread(target=d.run)
    th.start()
    try:
        assert _until(lambda: d.scheduler is not None and d.scheduler.running, 30)
        for symbols in ([], ["ETH/USDT"], ["ETH/USDT", "SOL/USDT"]):
            d.request_reload()
            assert _until(lambda s=symbols: told == s and not d._reload.is_set(), 30)
            time.sleep(0.2)
            assert told == symbols and th.is_alive()
    finally:
        d.request_stop()
        th.join(30)
    assert d.settings.market.symbol == "SOL/USDT"
