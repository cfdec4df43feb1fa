"""Soak/fault harness: the live tick against the emulator on an accelerated clock, with injected
faults and periodic SIGKILLs, then the checks. Test tooling (benchmarks/soak.py, tests/test_soak.py),
not a production code path.

The emulator runs in this process; the daemon runs as ``python -m chartrl.daemon.simrun`` children
(live mode, the emulator's keys), killed with SIGKILL at random moments and restarted. Faults:
rate limits (429), gateway errors (503), timeouts, connection resets on market data, and on order
submission dropped responses, resets and processed-then-503 answers (ambiguous outcomes).

Checks (``SoakReport.problems``): no child exits other than our kills and a final 0 after SIGTERM;
every candle in the run decided or logged as missed; no client order id twice and no two orders
for one decision; the ledger equals the emulator (orders, trades, balances: ``verify_live``);
the RSS of the long uninterrupted child stays flat.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chartrl.market.candles import to_ms
from chartrl.timeframe import timeframe_ms

HOUR = 3_600_000
SPEC = "window = 40\nheight = 32\nwidth = 40\nma_periods = [5, 20]\nbollinger_period = 20\n"


@dataclass
class SoakReport:
    ticks: int = 0
    decisions: int = 0
    missed: int = 0
    candles: int = 0
    kills: int = 0
    restarts: int = 0
    orders: int = 0
    fills: int = 0
    faults: int = 0
    wall_seconds: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    tick_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_start_mb


def _child(argv: list[str], env: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(env)
    from chartrl.daemon.simrun import main

    sys.exit(main(argv))


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _save_model(model_dir: Path) -> None:
    import torch

    from chartrl.chart.spec import ChartSpec
    from chartrl.strategies.registry import build_policy
    from chartrl.train.checkpoint import save_model

    torch.manual_seed(3)
    spec = ChartSpec(**tomllib.loads(SPEC))
    policy = build_policy("cnnrnn", spec, widths=(4, 8), feat_dim=16, hidden_size=8)
    # An untrained net mostly holds; this one reads its position input to buy when flat and sell
    # when long, so nearly every tick sends an order (the chart still goes through CNN and RNN).
    with torch.no_grad():
        policy.out.weight[:, -2] = torch.tensor([0.0, -10.0, 10.0])
        policy.out.bias[:] = torch.tensor([0.0, 5.0, 0.0])
    save_model(
        model_dir,
        policy,
        {
            "chart_spec": spec,
            "series": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"},
        },
    )


def _config(workdir: Path, url: str, strategy: str) -> Path:
    # position_fraction < 1: at thousands of times real speed a slow tick's market order can land
    # candles later, at another price; an all-in buy would then hit InsufficientFunds (a halt).
    cfg = workdir / "soak.toml"
    cfg.write_text(
        f'[exchange]\nid = "binance"\napi_url = "{url}"\ntimeout_ms = 1500\nrecv_window_ms = 400\nmax_retries = 3\nretry_base_delay = 0.02\n\n'
        f'[market]\nsince = "2020-01-01"\n\n[data]\ndir = "{workdir / "data"}"\n\n[chart]\n{SPEC}\n'
        f'[trading]\nmode = "live"\norder_lookup_grace_seconds = 2.0\norder_lost_deadline_seconds = 3.0\nposition_fraction = 0.9\n\n'
        f'[model]\nstrategy = "{strategy}"\ndevice = "cpu"\n\n'
        "[risk]\nmax_orders_per_day = 100000\nmax_daily_loss = 1.0\nstale_after_timeframes = 1000\n\n"
        '[daemon]\ntick_delay_seconds = 20.0\n\n[log]\nlevel = "info"\n'
    )
    return cfg


def add_faults(plan: Any, rate: float) -> None:
    """Probabilistic faults on market data and on order submission (``rate`` scales them)."""
    plan.add("/api/v3/klines", "429", None, 0.5 * rate)
    plan.add("/api/v3/klines", "503", None, 0.5 * rate)
    plan.add("/api/v3/klines", "reset", None, 0.3 * rate)
    plan.add("/api/v3/klines", "timeout", None, 0.2 * rate, ms=2500)
    plan.add("/api/v3/order", "drop_response", None, 1.5 * rate, method="POST")
    plan.add("/api/v3/order", "503", None, 0.7 * rate, method="POST", process=True)
    plan.add("/api/v3/order", "reset", None, 0.7 * rate, method="POST")
    plan.add("/api/v3/account", "429", None, 0.3 * rate)


def run_soak(
    workdir: Path,
    *,
    ticks: int = 60,
    speed: float = 3600.0,
    kill_every: tuple[float, float] = (4.0, 9.0),
    kill_phase: float = 0.6,
    fault_rate: float = 0.05,
    strategy: str = "cnnrnn",
    seed: int = 0,
    progress: Any = None,
) -> SoakReport:
    """``ticks`` candles of live trading; the first ``kill_phase`` of them under SIGKILLs."""
    from chartrl.testing.exchange_sim import (
        DEFAULT_API_KEY,
        DEFAULT_API_SECRET,
        ExchangeSim,
        FaultPlan,
        SimClock,
    )
    from chartrl.testing.synthetic import synthetic_candles

    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    history = 400
    candles = synthetic_candles(history + ticks + 8, seed=seed + 11)
    start_ms = int(to_ms(candles["timestamp"].iloc[history]))
    end_ms = int(to_ms(candles["timestamp"].iloc[history + ticks]))
    report = SoakReport()
    plan = FaultPlan(seed=seed)
    clock = SimClock(start_ms + 1000, speed=speed)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARTRL", "NOTIFY_SOCKET"))}
    env |= {
        "CHARTRL__EXCHANGE__API_KEY": DEFAULT_API_KEY,
        "CHARTRL__EXCHANGE__API_SECRET": DEFAULT_API_SECRET,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    t_wall = time.monotonic()
    with ExchangeSim(
        candles,
        clock=clock,
        balances={"USDT": 10_000.0},
        faults=plan,
        partial_fills=2,
        commission="quote",
    ) as sim:  # base-currency fees leave dust the policy reads as "long"
        cfg = _config(workdir, sim.url, strategy)
        if strategy == "cnnrnn":
            _save_model(workdir / "data" / "models" / "champion")
        add_faults(plan, fault_rate)
        logs = workdir / "logs"
        logs.mkdir(exist_ok=True)
        kill_until = start_ms + int(kill_phase * ticks) * HOUR
        from chartrl.testing.killrun import forkserver_context

        ctx = forkserver_context()
        n = 0
        while clock.now_ms() < end_ms + 25_000:
            n += 1
            log_file = logs / f"child-{n:03d}.jsonl"
            argv = [
                "--config",
                str(cfg),
                "--speed",
                str(speed),
                "--live",
                "--log-file",
                str(log_file),
            ]
            proc = ctx.Process(target=_child, args=(argv, env), daemon=True)
            proc.start()
            report.restarts += 1
            killing = clock.now_ms() < kill_until
            deadline = time.monotonic() + (rng.uniform(*kill_every) if killing else 1e9)
            samples: list[tuple[float, float]] = []
            while (
                proc.is_alive() and time.monotonic() < deadline and clock.now_ms() < end_ms + 25_000
            ):
                rss = _rss_mb(proc.pid)
                if rss is not None:
                    samples.append((time.monotonic(), rss))
                if progress is not None:
                    progress((clock.now_ms() - start_ms) / (end_ms - start_ms))
                proc.join(0.25)
            if proc.is_alive():
                if time.monotonic() >= deadline:
                    proc.kill()  # SIGKILL: no handler, no flush, mid-whatever
                    report.kills += 1
                    proc.join()
                else:  # the run is over: a clean stop must exit 0
                    proc.terminate()
                    proc.join(60)
                    if proc.is_alive():
                        proc.kill()
                        report.problems.append(f"child {n} did not stop within 60 s of SIGTERM")
                    elif proc.exitcode != 0:
                        report.problems.append(
                            f"child {n} exited {proc.exitcode} after SIGTERM (expected 0)"
                        )
            elif proc.exitcode != 0:
                report.problems.append(
                    f"child {n} crashed with exit code {proc.exitcode} (see {log_file})"
                )
            if not killing and samples:
                _rss_check(samples, report)
        report.faults = len(plan.injected)
        report.wall_seconds = round(time.monotonic() - t_wall, 1)
        _check(workdir, sim, start_ms, end_ms, report)
    return report


def _rss_check(samples: list[tuple[float, float]], report: SoakReport) -> None:
    # After the start-up (imports, first model load) the resident set must not keep growing.
    steady = samples[len(samples) // 5 :]
    if len(steady) < 8:
        return
    q = max(len(steady) // 4, 2)
    first = sorted(r for _, r in steady[:q])[q // 2]
    last = sorted(r for _, r in steady[-q:])[q // 2]
    report.rss_start_mb, report.rss_end_mb = round(first, 1), round(last, 1)
    if last - first > max(25.0, 0.1 * first):
        report.problems.append(
            f"RSS grew from {first:.0f} MB to {last:.0f} MB during the uninterrupted run"
        )


def _check(workdir: Path, sim: Any, start_ms: int, end_ms: int, report: SoakReport) -> None:
    from chartrl.account.ledger import Ledger
    from chartrl.testing.killrun import verify_live

    step = timeframe_ms("1h")
    missed: set[int] = set()
    for f in sorted((workdir / "logs").glob("child-*.jsonl")):
        for line in f.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == "tick":
                report.ticks += 1
                report.tick_ms.append(float(e["timings"]["total_ms"]))
            elif e.get("event") == "tick_missed":
                if "first" in e:
                    a, b = _ms(e["first"]), _ms(e["last"])
                    missed.update(range(a, b + 1, step))
                elif "candle" in e:
                    missed.add(_ms(e["candle"]))
    db = workdir / "data" / "ledger.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        decided = {r[0] for r in c.execute("SELECT candle_ms FROM decisions WHERE mode = 'live'")}
        per_decision = c.execute(
            "SELECT decision_id, count(*) FROM orders WHERE decision_id IS NOT NULL GROUP BY decision_id HAVING count(*) > 1"
        ).fetchall()
        dup_candles = c.execute(
            "SELECT candle_ms, count(*) FROM decisions GROUP BY candle_ms HAVING count(*) > 1"
        ).fetchall()
    report.decisions, report.missed = len(decided), len(missed - decided)
    if not decided:
        report.problems.append("no decision was recorded")
        return
    first, last = min(decided), max(decided)
    expected = set(range(first, last + 1, step))
    report.candles = len(expected)
    unaccounted = sorted(expected - decided - missed)
    if unaccounted:
        report.problems.append(
            f"{len(unaccounted)} candles neither decided nor logged as missed, e.g. {unaccounted[:3]}"
        )
    if last < end_ms - 3 * step:
        report.problems.append(
            f"the run stopped early: last decision {last}, expected up to {end_ms}"
        )
    if per_decision:
        report.problems.append(f"decisions with more than one order: {per_decision[:3]}")
    if dup_candles:
        report.problems.append(f"candles decided twice: {dup_candles[:3]}")
    with Ledger(db, readonly=True) as led:
        duplicates, problems = verify_live(led, sim)
        report.orders, report.fills = len(led.orders("live")), len(led.fills("live"))
        halts = led.active_halts()
    if halts:
        report.problems.append(
            f"trading halted: {halts[0].reason} ({(halts[0].details or '')[:200]})"
        )
    if duplicates:
        report.problems.append(f"{duplicates} duplicate orders on the exchange")
    report.problems.extend(problems)


def _ms(iso: str) -> int:
    import pandas as pd

    return int(pd.Timestamp(iso).value // 1_000_000)
