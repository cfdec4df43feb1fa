"""The console under load: the dashboard's first render over a year of hourly decisions in headless
chromium, and ``/api/status`` latency while the daemon ticks.

    .venv/bin/python benchmarks/console.py [--requests 1000] [--runs 3]

1. First render: a data dir with a year (8,760) of hourly decisions, a fill every 48 candles and
   the candles in the store, served by ``chartrl serve``. A fresh chromium profile each run (cold
   cache: plotly.js is loaded too), timed from ``goto`` to the equity plot's SVG traces having
   drawn every point. References, same run: the same page over one day (24 decisions), and a page
   that only loads and runs plotly.js (its 4.8 MB dominate on a slow or busy CPU). Target: the
   year renders in under 2 s (median of ``--runs``).
2. ``/api/status``: ``--requests`` sequential requests over keep-alive HTTP to ``chartrl serve``,
   first with the daemon idle (the reference), then while ``python -m chartrl.daemon.simrun``
   ticks a paper book against the loopback exchange at 36,000x (a tick every 0.1 s). Target: p99
   under 50 ms while ticking.

Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOKEN = "benchmark-console-token-0123456789"
CHROMIUM = "/usr/bin/chromium"
HOUR = 3_600_000
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def synthetic_book(data_dir: Path, n: int) -> None:
    """``n`` hourly decisions of a paper book (a buy or sell every 48 candles) and their candles."""
    from chartrl.account.ledger import Ledger
    from chartrl.market.candles import to_ms
    from chartrl.market.store import CandleStore
    from chartrl.testing.synthetic import synthetic_candles

    candles = synthetic_candles(n + 400, seed=3)
    CandleStore(data_dir).ingest("binance", "BTC/USDT", "1h", candles, source="synthetic")
    ts = [int(to_ms(t)) for t in candles["timestamp"]]
    close = candles["close"].to_numpy()
    cash, pos, fee = 10_000.0, 0.0, 0.001
    with Ledger.for_data_dir(data_dir) as ledger, ledger.transaction():
        for k in range(n):
            i = 400 + k
            action = (1 if pos == 0 else 2) if k % 48 == 0 else 0
            did = ledger.record_decision(
                symbol="BTC/USDT",
                mode="paper",
                candle_ms=ts[i],
                action=action,
                final_action=action,
                reason="ok",
                model_version="bench",
                price=float(close[i]),
                details={"q": [0.1, 0.2, 0.3], "risk_reason": "ok", "requested": action},
            )
            if action and i + 1 < len(ts):
                price = float(candles["open"].iloc[i + 1])
                amount = cash / price / (1 + fee) if action == 1 else pos
                side = "buy" if action == 1 else "sell"
                cid = f"paper-{ts[i + 1]}-{side}"
                ledger.create_order(
                    cid, symbol="BTC/USDT", mode="paper", side=side, amount=amount, decision_id=did
                )
                ledger.update_order(cid, state="filled", filled=amount, average=price)
                ledger.add_fill(
                    trade_id=cid,
                    client_order_id=cid,
                    symbol="BTC/USDT",
                    mode="paper",
                    side=side,
                    price=price,
                    amount=amount,
                    fee=price * amount * fee,
                    timestamp_ms=ts[i + 1],
                )
                if side == "buy":
                    cash, pos = cash - price * amount * (1 + fee), amount
                else:
                    cash, pos = cash + price * amount * (1 - fee), 0.0
        ledger.save_paper_book(
            "BTC/USDT",
            {
                "cash": cash,
                "position": pos,
                "entry_price": 0.0,
                "fees_paid": 0.0,
                "turnover": 0.0,
                "initial_cash": 10_000.0,
                "last_price": float(close[400 + n - 1]),
                "last_candle_ms": ts[400 + n - 1],
            },
        )


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def serve(data_dir: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = _env() | {"CHARTRL_DATA_DIR": str(data_dir), "CHARTRL__CONSOLE__TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "chartrl", "--log-level", "warning", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(url + "/healthz", timeout=30)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("chartrl serve did not start")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARTRL")}
    return env | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


PLOTLY_ONLY = "<!doctype html><script src='/static/plotly.min.js'></script>"


def first_render(url: str, points: int, runs: int, work: Path) -> list[float]:
    """Seconds from ``goto`` to the equity plot drawn (``points`` 0: plotly.js alone, evaluated)."""
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        for r in range(runs):
            ctx = p.chromium.launch_persistent_context(
                str(work / f"profile-{points}-{r}"),
                executable_path=CHROMIUM,
                headless=True,
                args=ARGS,
                viewport={"width": 1280, "height": 1000},
            )
            page = ctx.new_page()
            page.goto(url + "/healthz")  # the origin, to put the token in its session storage
            page.evaluate(f"sessionStorage.setItem('chartrl.token', '{TOKEN}')")
            if points == 0:  # the reference: a page that only loads and runs the library
                page.route(
                    url + "/blank", lambda r: r.fulfill(body=PLOTLY_ONLY, content_type="text/html")
                )
                t0 = time.perf_counter()
                page.goto(url + "/blank")
                page.wait_for_function("() => window.Plotly !== undefined", timeout=60_000)
                out.append(time.perf_counter() - t0)
                ctx.close()
                continue
            t0 = time.perf_counter()
            page.goto(url + "/")
            # Drawn: the plot holds every point and its SVG line traces have their paths.
            page.wait_for_function(
                f"""() => {{
                    const gd = document.getElementById('equity');
                    const lines = [...gd.querySelectorAll('.scatterlayer .trace path.js-line')];
                    return gd.data && gd.data[0].x.length >= {points} &&
                        lines.filter(p => (p.getAttribute('d') || '').length > 20).length >= 2;
                }}""",
                timeout=60_000,
            )
            out.append(time.perf_counter() - t0)
            ctx.close()
    return out


def status_latency(url: str, n: int) -> np.ndarray:
    import httpx

    ms = np.empty(n)
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        c.get(url + "/api/status").raise_for_status()
        for i in range(n):
            t0 = time.perf_counter()
            c.get(url + "/api/status").raise_for_status()
            ms[i] = (time.perf_counter() - t0) * 1000
    return ms


def ticking_daemon(work: Path, ticks: int):  # noqa: ANN201 - (ExchangeSim, Popen, data dir)
    from chartrl.market.candles import to_ms
    from chartrl.testing.exchange_sim import ExchangeSim, SimClock
    from chartrl.testing.synthetic import synthetic_candles

    speed = 36_000.0
    candles = synthetic_candles(600 + ticks + 50, seed=9)
    clock = SimClock(int(to_ms(candles["timestamp"].iloc[600])) + 1000, speed=speed)
    sim = ExchangeSim(candles, clock=clock).__enter__()
    cfg = work / "tick.toml"
    cfg.write_text(
        f'[exchange]\nid = "binance"\napi_url = "{sim.url}"\nretry_base_delay = 0.02\n\n'
        f'[market]\nsince = "2020-01-01"\n\n[data]\ndir = "{work / "tick-data"}"\n\n'
        '[model]\nstrategy = "sma"\n\n[risk]\nmax_orders_per_day = 100000\n'
        "stale_after_timeframes = 1000\n\n[daemon]\ntick_delay_seconds = 20.0\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "chartrl.daemon.simrun", "--config", str(cfg)]
        + ["--speed", str(speed), "--ticks", str(ticks), "--log-file", str(work / "tick.jsonl")],
        env=_env(),
    )
    return sim, proc, work / "tick-data"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} is absent: apt-get install chromium")

    from chartrl.logs import configure_logging

    configure_logging("warning", "json", stream=io.StringIO())
    work = Path(tempfile.mkdtemp(prefix="chartrl-consolebench-"))
    renders = {}
    for name, n in (("day", 24), ("year", 8760)):
        data = work / name
        synthetic_book(data, n)
        proc, url = serve(data)
        try:
            if name == "day":
                renders["plotly"] = statistics.median(first_render(url, 0, args.runs, work))
                print(f"plotly.js alone, loaded and run: {renders['plotly']:.3f} s", flush=True)
            renders[name] = statistics.median(first_render(url, n, args.runs, work))
        finally:
            proc.terminate()
            proc.wait(30)
        print(
            f"first render, {name} ({n} decisions): {renders[name]:.3f} s (median of {args.runs})"
        )

    ticks = 100_000  # stopped when the measurement ends
    sim, daemon, data = ticking_daemon(work, ticks)
    try:
        # A few ticks first: the ledger is then in WAL mode, where a stopped writer blocks no reader.
        for _ in range(1200):
            if (data / "ledger.sqlite").exists() and _decisions(data) >= 5:
                break
            time.sleep(0.1)
        else:
            raise SystemExit("the daemon did not tick; see " + str(work / "tick.jsonl"))
        daemon.send_signal(19)  # SIGSTOP: the idle reference, same ledger, nothing writing
        server, url = serve(data)
        try:
            idle = status_latency(url, args.requests)
            daemon.send_signal(18)  # SIGCONT: ticking again
            time.sleep(1.0)
            before = _decisions(data)
            busy = status_latency(url, args.requests)
            ticked = _decisions(data) - before
        finally:
            server.terminate()
            server.wait(30)
    finally:
        daemon.terminate()
        daemon.wait(60)
        sim.__exit__(None, None, None)
    i99, b99 = np.percentile(idle, 99), np.percentile(busy, 99)
    print(
        f"/api/status idle: p50 {np.median(idle):.2f} ms p99 {i99:.2f} ms; while ticking "
        f"({ticked} ticks during the {args.requests} requests): p50 {np.median(busy):.2f} ms "
        f"p99 {b99:.2f} ms"
    )
    ok = renders["year"] < 2.0 and b99 < 50.0
    print(
        f"RESULT first_render_year_s={renders['year']:.3f} first_render_day_s={renders['day']:.3f} "
        f"plotly_only_s={renders['plotly']:.3f} year_vs_day={renders['year'] / renders['day']:.2f} "
        f"year_vs_plotly_only={renders['year'] / renders['plotly']:.2f} status_p99_ticking_ms={b99:.2f} "
        f"status_p99_idle_ms={i99:.2f} status_ratio={b99 / i99:.2f} ticks={ticked} "
        f"targets={'met' if ok else 'MISSED'} (render < 2 s, p99 < 50 ms)"
    )
    return 0 if ok else 1


def _decisions(data: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{data / 'ledger.sqlite'}?mode=ro", uri=True) as c:
            return int(c.execute("SELECT count(*) FROM decisions").fetchone()[0])
    except sqlite3.OperationalError:  # still being created
        return 0


if __name__ == "__main__":
    sys.exit(main())
