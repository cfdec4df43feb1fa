"""The dashboard in a real browser: Debian's chromium driven by Playwright (never `playwright install`).

It skips only where chromium is not installed, and says so; `.ci/run` installs it, so in CI it runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from test_console import TOKEN, paper_run

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch(playwright, user_data_dir: Path):  # noqa: ANN001, ANN201 - playwright objects
    """A fresh headless chromium profile (a persistent context is the one that takes a dir)."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=ARGS,
        viewport={"width": 1280, "height": 1500},
    )


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """A console served by uvicorn on a free loopback port over a fresh paper run's data dir."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: `apt-get install chromium` (CI's .ci/run does)")
    from chartrl.console.server import Console

    s = paper_run(tmp_path_factory.mktemp("browser"))
    c = Console(s, host="127.0.0.1", port=0)
    thread = c.start_in_thread()
    yield s, c
    c.stop()
    thread.join(timeout=10)


def test_dashboard_fits_a_phone(console, tmp_path):  # before the halt test: it needs no halt
    from playwright.sync_api import sync_playwright

    _s, c = console
    with sync_playwright() as p:
        browser = launch(p, tmp_path / "profile")
        page = browser.new_page()
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(c.url)
        page.evaluate(f"sessionStorage.setItem('chartrl.token', '{TOKEN}')")
        page.reload()
        page.wait_for_selector("#equity .scatterlayer .trace", timeout=30_000)
        # Nothing wider than the phone (no sideways scrolling), and one card per row, full width.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        cards = page.evaluate(
            "[...document.querySelectorAll('main .card')].map(c => c.getBoundingClientRect().width)"
        )
        assert len(cards) == 8 and min(cards) >= 360, cards
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        browser.close()


def test_dashboard_draws_the_equity_and_halts_from_the_button(console, tmp_path):
    from playwright.sync_api import sync_playwright

    from chartrl.account.ledger import Ledger

    s, c = console
    shot = tmp_path / "dashboard.png"
    with sync_playwright() as p:
        browser = launch(p, tmp_path / "profile")
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.on("dialog", lambda d: d.accept())
        page.goto(c.url)
        page.fill("#token", TOKEN)
        page.click("#login-form button[type=submit]")
        # The equity plot has drawn when its SVG line traces (bot, buy and hold, drawdown) have points.
        page.wait_for_function(
            """() => [...document.querySelectorAll('#equity .scatterlayer .trace path.js-line')]
                      .filter(p => (p.getAttribute('d') || '').split('L').length > 10).length >= 3""",
            timeout=30_000,
        )
        page.wait_for_selector("#chart-img[src^='blob:']", timeout=30_000)
        # A zoom fetches that range at full detail; a double click (autorange) the whole book.
        xs = page.evaluate("document.getElementById('equity').data[0].x")
        plotly_time = [x.replace("T", " ").replace("+00:00", "") for x in xs]  # as a drag gives
        page.evaluate(
            "r => Plotly.relayout('equity', {'xaxis.range[0]': r[0], 'xaxis.range[1]': r[1]})",
            [plotly_time[3], plotly_time[8]],
        )
        page.wait_for_function(
            f"() => JSON.stringify(document.getElementById('equity').data[0].x) === "
            f"'{json.dumps(xs[3:9], separators=(',', ':'))}'",
            timeout=30_000,
        )
        assert "in this range" in page.locator("#equity-note").inner_text()
        page.evaluate("Plotly.relayout('equity', {'xaxis.autorange': true})")
        page.wait_for_function(
            f"() => document.getElementById('equity').data[0].x.length === {len(xs)}",
            timeout=30_000,
        )
        assert page.locator("#halt-badge").inner_text() == "trading"
        assert page.locator("#decisions tbody tr").count() == 15
        assert TOKEN not in page.url and all(TOKEN not in u for u in requests)
        assert all(u.startswith(c.url) or u.startswith("blob:") for u in requests), requests

        page.fill("#halt-reason", "checking from the browser")
        page.click("#halt")
        page.wait_for_function(
            "() => document.querySelector('#halt-badge').textContent === 'HALTED'", timeout=30_000
        )
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    with Ledger.for_data_dir(s.data_dir, readonly=True) as ledger:
        [halt] = ledger.active_halts()
    assert halt.reason == "manual" and halt.details == "checking from the browser"
    assert halt.source == "console:127.0.0.1"
    assert shot.stat().st_size > 20_000
    keep = Path(__import__("os").environ.get("CONSOLE_SCREENSHOT_DIR", ""))
    if keep != Path(""):  # to refresh docs/console.png by hand: CONSOLE_SCREENSHOT_DIR=/tmp/x
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / shot.name)
