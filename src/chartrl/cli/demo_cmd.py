"""chartrl demo: the whole product offline, against the loopback exchange, in a few minutes.

1. start the exchange emulator with synthetic BTC-like candles (NOT real prices);
2. fetch them through ccxt into a fresh demo data dir (validated by the store);
3. train a small cnnrnn (imitation of the oracle, then Double DQN) for a short budget;
4. backtest it on later, held-out candles against the rule baselines (and the cheating oracle,
   the hindsight upper bound) and write the reports;
5. run the paper daemon's tick against a second emulator on an accelerated clock (an hour a
   second) for a few dozen candles;
6. run one nightly retrain cycle (fine-tune, compare on held-out days, promote or keep);
7. show ``chartrl status`` and where the reports and pictures are.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEMO_CHART = "window = 60\nheight = 48\nwidth = 64\nma_periods = [5, 20]\nbollinger_period = 20\n"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run everything offline against the loopback exchange (synthetic candles)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("demo-out"), help="output directory (default ./demo-out)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller data and training budget (about a minute or two)",
    )
    p.add_argument(
        "--ticks", type=int, default=None, help="paper daemon ticks (default 36, quick 24)"
    )
    p.add_argument("--force", action="store_true", help="replace an earlier demo in --out")
    p.set_defaults(func=_demo)


class _Plan:
    def __init__(self, quick: bool, ticks: int | None) -> None:
        self.candles = 2600 if quick else 4000
        self.ticks = ticks or (24 if quick else 36)
        self.held_out = 400 if quick else 700  # backtested, never trained on
        self.train_args = (
            [
                "--epochs",
                "1",
                "--imitation-epochs",
                "1",
                "--max-steps-per-epoch",
                "150",
                "--num-envs",
                "4",
            ]
            if quick
            else ["--epochs", "2", "--imitation-epochs", "1", "--max-steps-per-epoch", "300"]
        )
        self.speed = 3600.0  # one candle hour per wall second


def _say(console: Any, step: str, text: str) -> None:
    console.print(f"\n[bold cyan]== {step}[/] {text}")


def _write_config(path: Path, data_dir: Path, api_url: str, since: str) -> None:
    path.write_text(
        "# Written by `chartrl demo`: the emulator's address, the demo data dir, a small chart.\n"
        f'[exchange]\nid = "binance"\napi_url = "{api_url}"\nretry_base_delay = 0.05\n\n'
        f'[market]\nsymbol = "BTC/USDT"\ntimeframe = "1h"\nsince = "{since}"\n\n'
        f'[data]\ndir = "{data_dir}"\n\n[chart]\n{DEMO_CHART}\n'
        '[model]\nstrategy = "cnnrnn"\ndevice = "auto"\n\n'
        "[daemon]\ntick_delay_seconds = 2.0\n\n[risk]\nmax_orders_per_day = 1000\n"
    )


def _cli(console: Any, config: Path, *args: str) -> int:
    """A chartrl command in a child process (its own progress bars), same interpreter."""
    cmd = [sys.executable, "-m", "chartrl", "--config", str(config), "--log-level", "error", *args]
    console.print(f"[dim]$ chartrl --config {config} {' '.join(args)}[/]")
    env = dict(os.environ)
    env.pop("CHARTRL_DATA_DIR", None)  # the demo config's data dir, not the caller's
    return subprocess.run(cmd, env=env, check=False).returncode


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from chartrl.errors import ChartrlError
    from chartrl.logs import configure_logging

    console = Console(soft_wrap=True)
    plan = _Plan(args.quick, args.ticks)
    if plan.ticks < 1:
        from chartrl.errors import UsageError

        raise UsageError(f"--ticks must be >= 1, got {plan.ticks}")
    out = args.out.expanduser().resolve()
    data_dir = out / "data"
    if (data_dir / "ledger.sqlite").exists() or (data_dir / "candles").exists():
        from chartrl.errors import UsageError

        if not (
            args.force
            and (out / "chartrl.toml").is_file()
            and "chartrl demo" in (out / "chartrl.toml").read_text()
        ):
            raise UsageError(
                f"{out} holds an earlier demo; pass --force to replace it, or another --out"
            )
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    configure_logging("warning", "console", stream=sys.stderr)
    t_start = time.monotonic()

    from chartrl.config import load_settings
    from chartrl.market.candles import to_ms
    from chartrl.testing.exchange_sim import ExchangeSim, SimClock
    from chartrl.testing.synthetic import synthetic_candles

    candles = synthetic_candles(plan.candles, seed=7)
    ts = candles["timestamp"]
    fetch_end = plan.candles - plan.ticks - 2  # the paper daemon trades the candles after this one
    train_until = fetch_end - plan.held_out
    config = out / "chartrl.toml"

    _say(
        console,
        "1/7",
        f"loopback exchange with {plan.candles:,} synthetic hourly candles (not real prices)",
    )
    clock = SimClock(
        int(to_ms(ts.iloc[fetch_end + 1])) + 1000
    )  # still: candle fetch_end has just closed
    with ExchangeSim(candles, clock=clock) as sim:
        console.print(f"emulator at {sim.url}, clock {ts.iloc[fetch_end + 1]:%Y-%m-%d %H:%M} UTC")
        _write_config(config, data_dir, sim.url, f"{ts.iloc[0]:%Y-%m-%d}")
        settings = load_settings(config, env={})

        _say(console, "2/7", "fetch the candles through ccxt into the demo data dir")
        from chartrl.market.fetch import update_series

        summary = update_series(settings, progress=True)
        console.print(
            f"stored {summary.count:,} candles {summary.first:%Y-%m-%d} .. {summary.last:%Y-%m-%d %H:%M} in {data_dir / 'candles'}"
        )

    model_dir = settings.model_dir
    _say(
        console,
        "3/7",
        f"train a small cnnrnn on the candles up to {ts.iloc[train_until]:%Y-%m-%d} (imitation, then Double DQN)",
    )
    code = _cli(
        console,
        config,
        "train",
        "--out",
        str(model_dir),
        "--strategy",
        "cnnrnn",
        "--until",
        f"{ts.iloc[train_until]:%Y-%m-%dT%H:%M}",
        *plan.train_args,
    )
    if code != 0:
        console.print(f"[red]training failed (exit {code}); the demo stops here[/]")
        return code

    _say(
        console,
        "4/7",
        f"backtest on the {plan.held_out} held-out candles after training, against the baselines",
    )
    reports = out / "reports"
    _backtests(console, config, model_dir, f"{ts.iloc[train_until + 1]:%Y-%m-%dT%H:%M}", reports)

    _say(
        console,
        "5/7",
        f"paper daemon: {plan.ticks} ticks against the emulator, clock at {plan.speed:g}x (an hour a second)",
    )
    try:
        _paper(console, candles, fetch_end, plan, config)
    except ChartrlError as exc:
        console.print(f"[red]paper daemon stopped: {exc}[/]")
        return exc.exit_code

    _say(
        console,
        "6/7",
        "one retrain cycle, as the daemon runs it nightly: fine-tune, compare on held-out days",
    )
    code = _cli(
        console,
        config,
        "retrain",
        "--no-fetch",
        "--epochs",
        "1",
        "--max-steps",
        "100" if args.quick else "200",
    )
    if code not in (0, 1):
        console.print(f"[yellow]retrain exited {code}; continuing[/]")

    _say(console, "7/7", "chartrl status")
    from chartrl.daemon.status import format_status, read_status

    settings = load_settings(config, env={})
    console.print(
        format_status(read_status(settings.data_dir), halt_file=settings.halt_file), highlight=False
    )

    console.print(f"\n[bold green]demo finished in {time.monotonic() - t_start:.0f} s[/]")
    console.print(f"  config            {config}")
    console.print(
        f"  model             {model_dir}  (training curves: {model_dir / 'history.csv'}, tensorboard: {model_dir / 'tb'})"
    )
    for name in ("model", "sma", "random", "oracle"):
        if (reports / name / "report.md").exists():
            console.print(
                f"  report ({name:<6})   {reports / name / 'report.md'}  (pictures: {reports / name}/*.png)"
            )
    console.print(f"  ledger            {data_dir / 'ledger.sqlite'}")
    console.print(f"  try: chartrl --config {config} status")
    return 0


def _backtests(
    console: Any, config: Path, model_dir: Path, bt_from: str, reports: Path
) -> list[str]:
    """The model's backtest and the baselines' on the held-out candles; the ones that failed.

    Each runs whatever the others did: a failed model backtest still leaves the baselines to look at.
    """
    failed = []
    for name, what in (
        ("model", ["--model", str(model_dir)]),
        ("sma", ["--strategy", "sma"]),
        ("random", ["--strategy", "random"]),
        ("oracle", ["--strategy", "oracle"]),  # the hindsight upper bound (CHEATS), for scale
    ):
        code = _cli(
            console,
            config,
            "backtest",
            *what,
            "--from",
            bt_from,
            "--out",
            str(reports / name),
            "--no-progress",
        )
        if code != 0:
            failed.append(f"{name} (exit {code})")
    if failed:
        console.print(
            f"[yellow]backtest failed: {', '.join(failed)}; continuing with the paper daemon[/]"
        )
    return failed


def _paper(console: Any, candles: Any, fetch_end: int, plan: _Plan, config: Path) -> None:
    from chartrl.config import load_settings
    from chartrl.daemon.simrun import drive
    from chartrl.daemon.tick import Ticker
    from chartrl.market.candles import to_ms
    from chartrl.testing.exchange_sim import ExchangeSim, SimClock

    ts = candles["timestamp"]
    start = int(to_ms(ts.iloc[fetch_end + 1])) + 1000
    clock = SimClock(start, speed=plan.speed)
    with ExchangeSim(candles, clock=clock) as sim:
        # A second emulator, same candles, on an accelerated clock: point the config at it.
        text = config.read_text()
        import re

        config.write_text(re.sub(r'api_url = "[^"]*"', f'api_url = "{sim.url}"', text))
        settings = load_settings(config, env={})
        ticker = Ticker(settings, clock=clock)

        def show(r: Any) -> None:
            t = r.timings
            act = (
                "-" if r.final_action is None else {0: "hold", 1: "buy", 2: "sell"}[r.final_action]
            )
            # Upper case when an order filled; a sell while flat (or a buy while long) trades nothing.
            fill = (
                f"{r.order['side'].upper()} {r.order['amount']:.5f} @ {r.order['price']:,.2f}"
                if r.order
                else ""
            )
            console.print(
                f"  {r.as_log()['candle'][:16]}  {r.status:<9} {act:<4}  close {r.price or 0:>10,.2f}  "
                f"equity {r.equity or 0:>10,.2f}  tick {t.get('total_ms', 0):6.1f} ms  {fill}",
                highlight=False,
            )

        try:
            counts = drive(
                ticker,
                clock,
                plan.speed,
                plan.ticks,
                int(settings.daemon.tick_delay_seconds * 1000),
                on_tick=show,
            )
        finally:
            ticker.close()
    console.print(f"ticks: {counts}")
