"""The console's API over a ledger written by a short paper run against the loopback exchange."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from chartrl.config.settings import Settings
from chartrl.console.app import create_app
from chartrl.errors import ConfigError, UsageError
from chartrl.testing.exchange_sim import ExchangeSim, SimClock
from chartrl.testing.synthetic import synthetic_candles
from test_daemon import HOUR, SPEC, START, _open_ms, _save

TOKEN = "console-test-token-Zq81vX7mPp03"
API_KEY = "AKIAconsoletestkey4711"
API_SECRET = "sEcReT-console-test-0a9b8c7d6e"
SECRETS = (TOKEN, API_KEY, API_SECRET)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The actions of the run: buy, hold while long, sell, buy again (the model is swapped between).
PLAN = [(1, 6), (2, 5), (1, 4)]
GETS = [
    "/api/status",
    "/api/equity",
    "/api/trades",
    "/api/decisions",
    "/api/model",
    "/api/retrains",
    "/api/halts",
    "/api/candles",
    "/api/chart/latest.png",
    "/metrics",
]


def paper_run(root: Path, token: str | None = TOKEN) -> Settings:
    """A paper daemon's data dir: 15 ticks of a tiny cnnrnn that buys, sells and buys again, two
    model promotions (the lineage) and one retrain record."""
    from chartrl.account.ledger import Ledger
    from chartrl.daemon.retrain import promote
    from chartrl.daemon.tick import Ticker

    candles = synthetic_candles(720, seed=5)
    clock = SimClock(_open_ms(candles, START + 1) + 5_000)
    with ExchangeSim(candles, clock=clock) as sim:
        s = Settings.model_validate(
            {
                "exchange": {
                    "api_url": sim.url,
                    "retry_base_delay": 0.0,
                    "max_retries": 1,
                },
                "market": {"since": "2020-01-01"},
                "data": {"dir": str(root / "data")},
                "chart": SPEC,
                "model": {"strategy": "cnnrnn", "device": "cpu"},
                "risk": {"max_orders_per_day": 1000},
                "console": {"token": token} if token else {},
            }
        )
        ticker = None
        for k, (action, ticks) in enumerate(PLAN):
            if k == 0:
                _save(s.model_dir, "cnnrnn", always=action)
                ticker = Ticker(s, clock=clock)
            else:
                challenger = s.model_dir.with_name(".challenger")
                _save(challenger, "cnnrnn", seed=k, always=action)
                promote(challenger, s.model_dir)
            for _ in range(ticks):
                assert ticker.tick().status == "done"
                clock.advance(HOUR)
        ticker.close()
    with Ledger.for_data_dir(s.data_dir) as ledger:
        rid = ledger.start_retrain("abc")
        ledger.finish_retrain(
            rid,
            status="kept",
            challenger="def",
            metrics={"champion_score": 0.5, "challenger_score": 0.2, "reason": "not better"},
        )
    # The keys a live daemon would hold (the emulator refuses unknown ones, so they come after).
    keys = {"api_key": SecretStr(API_KEY), "api_secret": SecretStr(API_SECRET)}
    return s.model_copy(update={"exchange": s.exchange.model_copy(update=keys)})


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Settings:
    return paper_run(tmp_path_factory.mktemp("console"))


@pytest.fixture
def client(book) -> TestClient:
    with TestClient(create_app(book, TOKEN)) as c:
        yield c


def _ledger_rows(s: Settings, sql: str) -> list[tuple]:
    with sqlite3.connect(s.data_dir / "ledger.sqlite") as c:
        return c.execute(sql).fetchall()


def test_every_endpoint_answers_from_the_ledger(client, book):
    n = sum(t for _a, t in PLAN)
    st = client.get("/api/status", headers=AUTH).json()
    assert st["mode"] == "paper" and st["symbol"] == "BTC/USDT" and st["halts"] == []

    eq = client.get("/api/equity", headers=AUTH).json()
    assert len(eq["time"]) == len(eq["equity"]) == len(eq["buy_and_hold"]) == n
    assert eq["equity"][0] == eq["buy_and_hold"][0] == eq["initial_equity"] == 10_000.0
    # Rebuilt from the fills alone, the book ends where the paper account's own book ended.
    cash, position = _ledger_rows(book, "SELECT cash, position FROM paper_books")[0]
    assert eq["cash"] == pytest.approx(cash, rel=1e-12) and eq["position"] == pytest.approx(
        position, rel=1e-12
    )
    assert max(eq["drawdown"]) == 0.0 and eq["max_drawdown"] == -min(eq["drawdown"])
    part = client.get(
        "/api/equity", params={"from": eq["time"][3], "to": eq["time"][5]}, headers=AUTH
    ).json()
    assert part["time"] == eq["time"][3:6] and part["equity"] == eq["equity"][3:6]
    # The drawdown is the book's, from its running peak, whatever the range (a zoom keeps a fall).
    assert part["drawdown"] == eq["drawdown"][3:6] and min(part["drawdown"]) < 0
    assert part["max_drawdown"] == -min(part["drawdown"])

    trades = client.get("/api/trades", headers=AUTH).json()
    assert [t["side"] for t in trades] == ["buy", "sell", "buy"]  # newest first

    dec = client.get("/api/decisions", params={"limit": 4}, headers=AUTH).json()
    assert len(dec) == 4 and set(dec[0]["q"]) == {"hold", "buy", "sell"}
    assert dec[-1]["action"] == "buy" and dec[-1]["fill"]["side"] == "buy"  # the 2nd buy decision
    assert all(d["risk"]["verdict"] for d in dec)
    first = client.get("/api/decisions", params={"limit": 100}, headers=AUTH).json()[-1]
    assert first["candle"].startswith("20") and first["fill"]["side"] == "buy"

    model = client.get("/api/model", headers=AUTH).json()
    assert model["strategy"] == "cnnrnn" and len(model["version"]) == 12
    assert [x["event"] for x in model["lineage"]][-1] == "start" and len(model["lineage"]) == 3
    assert model["skill"]["status"] == "kept" and model["skill"]["reason"] == "not better"

    rt = client.get("/api/retrains", headers=AUTH).json()
    assert rt[0]["status"] == "kept" and rt[0]["promoted"] is False

    halts = client.get("/api/halts", headers=AUTH).json()
    assert halts["halted"] is False and halts["active"] == []

    c = client.get("/api/candles", params={"limit": 50}, headers=AUTH).json()
    assert len(c["close"]) == 50 and c["time"] == sorted(c["time"])

    png = client.get("/api/chart/latest.png", headers=AUTH)
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    from chartrl.console.chart import SCALE

    assert Image.open(io.BytesIO(png.content)).size == (
        SPEC["width"] * SCALE,
        SPEC["height"] * SCALE,
    )

    assert client.get("/openapi.json").json()["paths"]["/api/decisions"]


def test_equity_downsampled_keeps_every_bucket_s_low_and_high(client, book):
    full = client.get("/api/equity", headers=AUTH).json()
    few = client.get("/api/equity", params={"points": 8}, headers=AUTH).json()
    assert full["decided"] == few["decided"] == len(full["time"]) == sum(t for _a, t in PLAN)
    assert 2 < len(few["time"]) <= 8 and few["time"] == sorted(few["time"])
    assert {few["time"][0], few["time"][-1]} == {full["time"][0], full["time"][-1]}
    # The points kept are points of the full series, and the extremes are among them.
    at = dict(zip(full["time"], zip(full["equity"], full["drawdown"], strict=True), strict=True))
    assert [at[t] for t in few["time"]] == list(zip(few["equity"], few["drawdown"], strict=True))
    assert min(few["drawdown"]) == min(full["drawdown"]) == -few["max_drawdown"]
    assert (min(few["equity"]), max(few["equity"])) == (min(full["equity"]), max(full["equity"]))
    assert client.get("/api/equity", params={"points": 1000}, headers=AUTH).json() == full


def test_plotly_js_is_the_vendored_bundle_served_from_here(client):
    from chartrl.console.app import PLOTLY_JS, PLOTLY_JS_SHA256, STATIC

    page = client.get("/")
    assert page.status_code == 200 and f'src="/static/{PLOTLY_JS}"' in page.text
    assert not re.search(r'(src|href)="(https?:)?//', page.text)  # nothing from elsewhere
    on_disk = (STATIC / PLOTLY_JS).read_bytes()
    assert hashlib.sha256(on_disk).hexdigest() == PLOTLY_JS_SHA256  # the file npm shipped
    assert b"plotly.js (finance - minified) v3.7.0" in on_disk[:200]
    assert b"MIT License" in (STATIC / PLOTLY_JS.replace(".min.js", ".LICENSE.txt")).read_bytes()
    for encoding in ("gzip", "identity"):
        js = client.get(f"/static/{PLOTLY_JS}", headers={"Accept-Encoding": encoding})
        assert js.status_code == 200 and js.content == on_disk  # httpx inflates the gzip one
        assert js.headers.get("content-encoding", "identity") == encoding
        assert "immutable" in js.headers["cache-control"]
        assert js.headers["content-type"].startswith("text/javascript")
    css = client.get("/static/console.css", headers={"Accept-Encoding": "gzip"})
    assert css.headers["cache-control"] == "no-cache" and css.headers["etag"]


def test_metrics_are_the_ledger_s_figures(client, book):
    text = client.get("/metrics", headers=AUTH).text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples
    }
    lab = (("mode", "paper"), ("symbol", "BTC/USDT"))
    n = sum(t for _a, t in PLAN)
    assert samples[("chartrl_tick_latency_seconds_count", lab)] == n
    st = client.get("/api/status", headers=AUTH).json()
    assert samples[("chartrl_equity", lab)] == pytest.approx(st["equity"])
    assert samples[("chartrl_position", lab)] == pytest.approx(st["position"])
    assert samples[("chartrl_orders", (("mode", "paper"), ("state", "filled")))] == 3
    assert samples[("chartrl_retrains_total", (("status", "kept"),))] == 1
    assert "chartrl_halts_active" in fams and "chartrl_model_age_seconds" in fams
    assert ("chartrl_last_tick_timestamp_seconds", lab) in samples
    assert 0.0 <= samples[("chartrl_exposure", lab)] <= 1.0
    # The example alert rules only use series that exist.
    import re

    rules = (Path(__file__).parents[1] / "docs" / "console-alerts.yml").read_text()
    names = set(fams) | {f"{n}_total" for n, f in fams.items() if f.type == "counter"}
    used = set(re.findall(r"\b(chartrl_[a-z_]+)", rules))
    assert used and used <= names, used - names


def test_healthz_is_503_with_the_reason_when_ticks_stop(client, book, tmp_path):
    ok = client.get("/healthz")  # no token needed; the run ticked moments ago (wall clock)
    assert ok.status_code == 200 and ok.json()["ok"] is True
    empty = book.model_copy(update={"data": book.data.model_copy(update={"dir": tmp_path})})
    with TestClient(create_app(empty, TOKEN)) as c:
        r = c.get("/healthz")
    assert r.status_code == 503 and "no tick" in r.json()["reason"]


def _routes(app) -> list[tuple[str, str]]:
    out = []
    for r in app.routes:
        for m in getattr(r, "methods", set()) - {"HEAD"}:
            if r.path.startswith(("/api", "/metrics")):
                out.append((m, r.path))
    return sorted(out)


def test_every_api_route_needs_the_token(client):
    routes = _routes(client.app)
    assert len(routes) == len(GETS) + 2  # and the two halt POSTs: a new route is covered here too
    for method, path in routes:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-of-the-same-size-xx"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Bearer {TOKEN}x"},
        ):
            r = client.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers)
            assert "bearer token" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/api/decisions", {"limit": 0}, "query parameter limit"),
        ("/api/decisions", {"limit": "ten"}, "query parameter limit"),
        ("/api/trades", {"limit": 10**9}, "query parameter limit"),
        ("/api/retrains", {"limit": -1}, "query parameter limit"),
        ("/api/candles", {"limit": 2}, "query parameter limit"),
        ("/api/equity", {"from": "yesterday"}, "query parameter from"),
        ("/api/equity", {"to": "31/12/2024"}, "query parameter to"),
        ("/api/equity", {"from": "2024-02-01", "to": "2024-01-01"}, "query parameter to"),
        ("/api/equity", {"points": 7}, "query parameter points"),
    ],
)
def test_bad_parameters_get_a_422_naming_the_field(client, path, params, named):
    r = client.get(path, params=params, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"].startswith(named), r.text
    assert "\n" not in r.json()["error"] and "Traceback" not in r.text


def test_bad_requests_get_one_clear_line(client):
    r = client.post(
        "/api/halt", content=b"{not json", headers=AUTH | {"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["error"].startswith("body field")
    r = client.post("/api/halt", json={"reason": "x" * 500}, headers=AUTH)
    assert r.status_code == 422 and "body field reason" in r.json()["error"]
    r = client.get("/api/nothing", headers=AUTH)
    assert r.status_code == 404 and "/docs" in r.json()["error"]
    r = client.delete("/api/status", headers=AUTH)
    assert r.status_code == 405 and r.json()["error"]


def test_no_secret_reaches_a_response_or_a_log(book, tmp_path):
    from chartrl.logs import configure_logging, register_secret

    for secret in SECRETS:
        register_secret(secret)  # as load_settings does
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    seen = []
    with TestClient(create_app(book, TOKEN), raise_server_exceptions=False) as c:
        for path in [*GETS, "/healthz", "/", "/docs", "/openapi.json", "/static/console.js"]:
            for headers in (AUTH, {"Authorization": "Bearer " + API_KEY}, {}):
                r = c.get(path, headers=headers)
                seen.append(r.text if not path.endswith(".png") else r.content.decode("latin-1"))
                seen.append(json.dumps(dict(r.headers)))
        # The token sent as a query string is never echoed, nor logged.
        r = c.get("/api/nothing", params={"token": TOKEN}, headers=AUTH)
        seen.append(r.text)
        r = c.post("/api/halt", json={"reason": f"key {API_SECRET}"}, headers=AUTH)
        seen.append(r.text)
        seen.append(c.get("/api/halts", headers=AUTH).text)
        c.post("/api/halt/clear", headers=AUTH)
    logged = stream.getvalue()
    assert "http_request" in logged  # the requests were logged
    for secret in SECRETS:
        assert secret not in logged
        for text in seen:
            assert secret not in text


def test_the_console_never_writes_the_ledger(client, book):
    def digest() -> dict[str, str]:  # every ledger file, a new -wal or -journal included
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(book.data_dir.glob("ledger.sqlite*"))
        }

    before = digest()
    for path in [*GETS, "/healthz"]:
        assert client.get(path, headers=AUTH).status_code == 200, path
    assert digest() == before


def test_halt_and_resume_use_the_ledger_like_chartrl_halt(client, book):
    from chartrl.account.ledger import Ledger

    r = client.post("/api/halt", json={"reason": "looks wrong"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["halted"] is True
    with Ledger.for_data_dir(book.data_dir, readonly=True) as ledger:
        [h] = ledger.active_halts()
    assert (h.reason, h.details, h.source) == ("manual", "looks wrong", "console:testclient")
    assert client.get("/api/halts", headers=AUTH).json()["halted"] is True
    assert client.get("/api/status", headers=AUTH).json()["halts"][0]["details"] == "looks wrong"
    book.halt_file.touch()
    r = client.post("/api/halt/clear", headers=AUTH)
    assert r.status_code == 200 and r.json()["halted"] is False
    assert any("removed halt file" in line for line in r.json()["done"])
    with Ledger.for_data_dir(book.data_dir, readonly=True) as ledger:
        assert ledger.active_halts() == [] and ledger.halts()[0].cleared_by == "console:testclient"
    assert not book.halt_file.exists()


def test_a_public_address_needs_a_configured_token(tmp_path):
    from chartrl.console.server import Console

    s = Settings.model_validate({"data": {"dir": str(tmp_path / "data")}})
    with pytest.raises(
        UsageError, match="refusing to serve the console on 0.0.0.0 without a token"
    ):
        Console(s, host="0.0.0.0", port=0)
    # On loopback it makes a token of its own, in a 0600 file, and keeps it across restarts.
    one = Console(s, host="127.0.0.1", port=0)
    one.sock.close()
    path = s.data_dir / "console.token"
    assert one.token_file == path and stat.S_IMODE(path.stat().st_mode) == 0o600
    two = Console(s, host="127.0.0.1", port=0)
    two.sock.close()
    assert path.read_text() == two.token_file.read_text()
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}"):
            Console(s, host="127.0.0.1", port=port)


def test_the_token_is_a_secret_of_the_config(tmp_path):
    from chartrl.config.loader import load_settings

    numeric = "1234567890123456789"  # TOML would read it as a number
    s = load_settings(env={"CHARTRL__CONSOLE__TOKEN": numeric})
    assert s.console.token.get_secret_value() == numeric
    with pytest.raises(ConfigError) as exc:
        load_settings(env={"CHARTRL__CONSOLE__TOKEN": "short-secret"})
    assert "console.token = ***: at least 16" in str(exc.value) and "short-secret" not in str(
        exc.value
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[console]\ntoken = "{TOKEN}"\n')
    with pytest.raises(ConfigError, match="console.token is written in") as exc:
        load_settings(cfg, env={})
    assert TOKEN not in str(exc.value)
    tf = tmp_path / "console.token"
    tf.write_text(f'token = "{TOKEN}"\n')
    tf.chmod(0o644)
    cfg.write_text(f'[console]\ntoken_file = "{tf}"\n')
    with pytest.raises(ConfigError, match="console.token_file .* readable by others"):
        load_settings(cfg, env={})
    tf.chmod(0o600)
    assert load_settings(cfg, env={}).console.token.get_secret_value() == TOKEN


def test_chartrl_serve_serves_the_page_the_api_and_metrics(book):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    env = dict(os.environ, CHARTRL_DATA_DIR=str(book.data_dir), CHARTRL__CONSOLE__TOKEN=TOKEN)
    cmd = [sys.executable, "-m", "chartrl", "--log-format", "json", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(url + "/healthz", timeout=30)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(url + "/").status_code == 200
        assert httpx.get(url + "/api/status", headers=AUTH).json()["mode"] == "paper"
        assert "chartrl_equity" in httpx.get(url + "/metrics", headers=AUTH).text
        assert httpx.get(url + "/api/status").status_code == 401
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert f"console at http://127.0.0.1:{port}/" in out and TOKEN not in out
    busy = subprocess.run(
        [*cmd[:-2], "--port", "70000"], env=env, capture_output=True, text=True, timeout=60
    )
    assert (
        busy.returncode == 2
        and busy.stderr.strip() == "error: --port 70000 must be between 1 and 65535"
    )


def test_chartrl_run_serves_the_console_when_enabled(book, monkeypatch):
    import chartrl.daemon.service as service
    from chartrl.cli import main

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    seen = {}

    class Daemon:  # the scheduler itself is not under test: while it "runs", ask the console
        def __init__(self, settings, *args, **kwargs):
            self.settings = settings

        def install_signals(self) -> None:
            pass

        def run(self) -> int:
            url = f"http://127.0.0.1:{port}"
            seen["status"] = httpx.get(url + "/api/status", headers=AUTH, timeout=60).json()
            seen["metrics"] = httpx.get(url + "/metrics", headers=AUTH, timeout=60).status_code
            return 0

    monkeypatch.setattr(service, "Daemon", Daemon)
    for name, value in {
        "CHARTRL_DATA_DIR": str(book.data_dir),
        "CHARTRL__CONSOLE__ENABLED": "true",
        "CHARTRL__CONSOLE__PORT": str(port),
        "CHARTRL__CONSOLE__TOKEN": TOKEN,
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 0
    assert seen["status"]["mode"] == "paper" and seen["metrics"] == 200


def test_an_empty_data_dir_is_a_503_in_one_log_line_not_a_traceback(book, tmp_path):
    from structlog.testing import capture_logs

    empty = book.model_copy(update={"data": book.data.model_copy(update={"dir": tmp_path})})
    # raise_server_exceptions=True: an error Starlette re-raises (a traceback) fails this test.
    with capture_logs() as events, TestClient(create_app(empty, TOKEN)) as c:
        r = c.get("/api/status", headers=AUTH)
    assert r.status_code == 503 and "no ledger" in r.json()["error"]
    assert [e["event"] for e in events if e.get("path") == "/api/status"][:1] == [
        "http_unavailable"
    ]
