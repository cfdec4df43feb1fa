"""The console under load: the dashboard's first render over a year of hourly decisions in headless
chromium, and ``/api/status`` latency while the daemon ticks.

    .venv/bin/python benchmarks/console.py [--requests 1000] [--runs 3] [--baseline REV]

1. First render: a data dir with a year (8,760) of hourly decisions, a fill every 48 candles and
   the candles in the store, served by ``chartrl serve``. A fresh chromium profile each run (cold
   cache: plotly.js is loaded too), timed from ``goto`` to the equity plot spanning the first and
   the last decided candle with its SVG line traces drawn. References, in the same runs, taken in
   turn: the same page over one day (24 decisions); a page that only loads and runs plotly.js;
   with ``--baseline REV``, the year served by that git revision's ``src/`` (say, the commit
   before a change) and its plotly.js alone. For the year it prints where the time went, from the
   page's own marks: plotly.js fetched and ready, the equity JSON fetched (and its bytes), parsed,
   drawn. Target: the year renders in under 2 s (median of ``--runs``).
2. ``/api/status``: ``--requests`` sequential requests over keep-alive HTTP to ``chartrl serve``,
   first with the daemon idle (the reference), then while ``python -m chartrl.daemon.simrun``
   ticks a paper book against the loopback exchange at 36,000x (a tick every 0.1 s). Target: p99
   under 50 ms while ticking.

The machine's load average at the end is in the ``RESULT`` line: on a shared box it moves every
figure.
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


def serve(data_dir: Path, src: Path | None = None) -> tuple[subprocess.Popen, str]:
    """``chartrl serve`` over ``data_dir``, from this checkout or from the source tree ``src``."""
    import httpx

    port = free_port()
    env = _env() | {"CHARTRL_DATA_DIR": str(data_dir), "CHARTRL__CONSOLE__TOKEN": TOKEN}
    if src is not None:
        env["PYTHONPATH"] = str(src)
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


BREAKDOWN = """() => {
    const mark = (n) => (performance.getEntriesByName(n)[0] || {}).startTime;
    const res = (f) => performance.getEntriesByType('resource').find((e) => f(e.name)) || {};
    const js = res((n) => n.includes('/static/plotly')), eq = res((n) => n.includes('/api/equity'));
    return {plotly_fetched: js.responseEnd, plotly_ready: mark('chartrl:plotly'),
            equity_fetched: eq.responseEnd, equity_bytes: eq.transferSize,
            equity_parsed: mark('chartrl:equity-data'), equity_drawn: mark('chartrl:equity')};
}"""


def first_render(pages: dict[str, tuple[str, str]], runs: int, work: Path) -> dict[str, list]:
    """Seconds from ``goto`` to the equity plot drawn, ``runs`` times per page, the pages taken in
    turn within each run (a load that changes meanwhile hits them alike). ``pages``: label ->
    (server url, what to wait for: ``"js:<path>"``, a page that only loads and runs that script,
    or ``"equity:<first>|<last>"``, the dashboard until its equity plot spans those two candles
    and its SVG line traces have their paths). Each run is a fresh profile: a cold cache."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list] = {label: [] for label in pages}
    with sync_playwright() as p:
        for r in range(runs):
            for label, (url, what) in pages.items():
                ctx = p.chromium.launch_persistent_context(
                    str(work / f"profile-{label}-{r}"),
                    executable_path=CHROMIUM,
                    headless=True,
                    args=ARGS,
                    viewport={"width": 1280, "height": 1000},
                )
                page = ctx.new_page()
                page.goto(url + "/healthz")  # the origin, to put the token in its session storage
                page.evaluate(f"sessionStorage.setItem('chartrl.token', '{TOKEN}')")
                kind, arg = what.split(":", 1)
                if kind == "js":  # the reference: a page that only loads and runs the library
                    html = f"<!doctype html><script src='{arg}'></script>"
                    page.route(url + "/blank", _fulfil(html))
                    t0 = time.perf_counter()
                    page.goto(url + "/blank")
                    page.wait_for_function("() => window.Plotly !== undefined", timeout=60_000)
                    out[label].append((time.perf_counter() - t0, {}))
                    ctx.close()
                    continue
                first, last = arg.split("|")
                t0 = time.perf_counter()
                page.goto(url + "/")
                page.wait_for_function(
                    f"""() => {{
                        const gd = document.getElementById('equity');
                        const lines = [...gd.querySelectorAll('.scatterlayer .trace path.js-line')];
                        const x = gd.data && gd.data[0].x;
                        return x && x[0] === '{first}' && x[x.length - 1] === '{last}' &&
                            lines.filter(p => (p.getAttribute('d') || '').length > 20).length >= 2;
                    }}""",
                    timeout=60_000,
                )
                out[label].append((time.perf_counter() - t0, page.evaluate(BREAKDOWN)))
                ctx.close()
    return out


def _fulfil(html: str):  # noqa: ANN202 - a playwright route handler
    # One argument: playwright passes the request too to a handler that takes two.
    return lambda route: route.fulfill(body=html, content_type="text/html")


def _ends(url: str) -> str:
    """``equity:<first>|<last>``: the first and last decided candle the equity plot must span."""
    import httpx

    eq = httpx.get(url + "/api/equity", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    t = eq.raise_for_status().json()["time"]
    return f"equity:{t[0]}|{t[-1]}"


def _baseline_src(rev: str, work: Path) -> Path:
    """The ``src/`` of git revision ``rev`` of this checkout, extracted under ``work``."""
    dest = work / f"baseline-{rev}"
    dest.mkdir()
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def _median_breakdown(rows: list) -> str:
    # An older page has no performance marks: only its resource timings are shown.
    keys = [k for k in rows[0][1] if all(r[1].get(k) is not None for r in rows)]
    return ", ".join(f"{k} {statistics.median(r[1][k] for r in rows):.0f}" for k in keys)


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
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also time the year's first render served by this git revision's src/ (e.g. the "
        "commit before a change), in the same runs, and report the ratio",
    )
    p.add_argument(
        "--baseline-plotly",
        default="plotly.min.js",
        help="the baseline's plotly.js under /static/ (default plotly.min.js, the full bundle "
        "before it was vendored)",
    )
    args = p.parse_args()
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} is absent: apt-get install chromium")

    from chartrl.logs import configure_logging

    configure_logging("warning", "json", stream=io.StringIO())
    work = Path(tempfile.mkdtemp(prefix="chartrl-consolebench-"))
    from chartrl.console.app import PLOTLY_JS

    books = {"day": 24, "year": 8760}
    servers = {}
    try:
        for name, n in books.items():
            synthetic_book(work / name, n)
            servers[name] = serve(work / name)
        pages = {
            "plotly": (servers["day"][1], f"js:/static/{PLOTLY_JS}"),
            "day": (servers["day"][1], _ends(servers["day"][1])),
            "year": (servers["year"][1], _ends(servers["year"][1])),
        }
        if args.baseline:
            servers["baseline"] = serve(work / "year", _baseline_src(args.baseline, work))
            url = servers["baseline"][1]
            pages["baseline_plotly"] = (url, f"js:/static/{args.baseline_plotly}")
            pages["baseline_year"] = (url, _ends(url))
        times = first_render(pages, args.runs, work)
    finally:
        for proc, _url in servers.values():
            proc.terminate()
            proc.wait(30)
    renders = {k: statistics.median(t for t, _ in v) for k, v in times.items()}
    for label, rows in times.items():
        what = f" ({books[label]} decisions)" if label in books else ""
        print(
            f"first render, {label}{what}: {renders[label]:.3f} s (median of {args.runs}: "
            + ", ".join(f"{t:.3f}" for t, _ in rows)
            + ")",
            flush=True,
        )
    for label, rows in times.items():
        if rows[0][1]:  # the pages that draw the equity: what their own timings say
            print(f"{label}, ms after goto (median):", _median_breakdown(rows), flush=True)

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
    base = ""
    if args.baseline:
        base = (
            f"baseline_year_s={renders['baseline_year']:.3f} "
            f"baseline_plotly_only_s={renders['baseline_plotly']:.3f} "
            f"year_vs_baseline={renders['year'] / renders['baseline_year']:.2f} "
        )
    print(
        f"RESULT first_render_year_s={renders['year']:.3f} first_render_day_s={renders['day']:.3f} "
        f"plotly_only_s={renders['plotly']:.3f} year_vs_day={renders['year'] / renders['day']:.2f} "
        f"year_vs_plotly_only={renders['year'] / renders['plotly']:.2f} {base}"
        f"status_p99_ticking_ms={b99:.2f} status_p99_idle_ms={i99:.2f} "
        f"status_ratio={b99 / i99:.2f} ticks={ticked} "
        f"targets={'met' if ok else 'MISSED'} (render < 2 s, p99 < 50 ms) "
        f"load_avg={' '.join(f'{x:.2f}' for x in os.getloadavg())}"
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
