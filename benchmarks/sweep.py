"""Sweep engine throughput: 4 small trials (cnn, seeds 1..4, one fold, synthetic candles, one
torch thread each) run in parallel on an embedded Ray with this machine's cores, and the same 4
serially, in the same run and on the same Ray (started once, its start-up reported apart).

Serial = every trial holds all the cores (``cpus_per_trial`` = the core count), so Tune runs them
one at a time through the very same engine. Reported:

- ``parallel_speedup`` = serial wall time / parallel wall time (target >= 0.8 x cores, 1.6 on 2);
- ``overhead_s_per_trial`` = (serial wall time - the trials' own seconds) / 4: what the engine
  adds to a trial (scheduling, the worker, loading the plan and candles, Tune's bookkeeping,
  results.csv), with training and judging excluded (target <= 5 s).

What the machine can give at the moment, measured in the same run: ``spin_speedup``, the speedup
of a pure-Python loop in ``cores`` processes over the same loops one after another, and
``conv_speedup``, the same for one-thread conv-net training steps, which is what a trial spends
its time on (on virtual cores that share a physical one, or its memory bandwidth, the second can
stay far below the first: the ceiling any parallel sweep of chart policies can reach there).

Also printed: how long each sweep took to start its first trial (Tune's actor start and the
worker's imports of torch and the trainer, about 7 s here, paid once a sweep however long it
runs, in both arms), and the speedup of the walls after that start: what longer sweeps tend to.

On a loaded machine the two measurements see different loads; ``--repeat N`` alternates them N
times (parallel, serial, parallel, ...) and keeps the fastest of each.

    .venv/bin/python benchmarks/sweep.py [--candles 3000] [--steps 60] [--repeat 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from chartrl.account.fills import MarketRules
from chartrl.chart.spec import ChartSpec
from chartrl.experiments.folds import purge_gap, sweep_folds
from chartrl.experiments.plan import Plan
from chartrl.experiments.sweep import init_ray, run_trials
from chartrl.testing.synthetic import synthetic_candles

SPEC = ChartSpec(window=60, height=48, width=64, ma_periods=(5, 10), bollinger_period=10)
TRIALS = 4


def plan_for(n: int, steps: int, cpus: float) -> tuple[Plan, object]:
    candles = synthetic_candles(n, seed=3)
    ts = candles["timestamp"]
    train = dict(epochs=1, imitation_epochs=1, num_envs=4, learning_starts=64)
    train.update(max_steps_per_epoch=steps, oracle_window=24)
    meta = {
        "series": {"exchange": "synthetic", "symbol": "BTC/USDT", "timeframe": "1h"},
        "data_range": {
            "from": ts.iloc[0].isoformat(),
            "until": ts.iloc[-1].isoformat(),
            "candles": n,
            "source": "synthetic(benchmark)",
        },
    }
    plan = Plan(
        strategies=["cnn"],
        seeds=list(range(1, TRIALS + 1)),
        folds=sweep_folds(n, 1, purge_gap(SPEC.window, 24)),
        spec=SPEC,
        timeframe="1h",
        meta=meta,
        rules=MarketRules(),
        train=train,
        threads=1,
        cpus_per_trial=cpus,
    )
    return plan, candles


def timed(plan: Plan, candles: object, out: Path) -> tuple[float, float, float]:
    """(wall seconds, sum of the trials' own seconds, seconds until the first trial started:
    Tune's actor start and the worker's imports, paid once a sweep) of one sweep."""
    t0, wall0 = time.perf_counter(), time.time()
    results = run_trials(plan, candles, out, progress=False)
    wall = time.perf_counter() - t0
    with results.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    bad = [r["trial_id"] for r in rows if r["status"] != "done"]
    if len(rows) != TRIALS or bad:
        sys.exit(f"benchmark sweep incomplete: {len(rows)} rows, failed {bad}")
    first = min((out / "trials" / r["trial_id"] / "unit.json").stat().st_mtime for r in rows)
    return wall, sum(float(r["seconds"]) for r in rows), first - wall0


def _spin(_: int) -> float:
    x = 0
    for i in range(5_000_000):
        x += i
    return float(x)


def _convs(_: int) -> float:
    """What a trial mostly does: forward and backward passes of a small conv net, one thread."""
    import torch

    torch.set_num_threads(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 5, 2), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, 2)
    )
    x = torch.rand(64, 3, 48, 64)
    for _ in range(40):
        net(x).sum().backward()
    return 0.0


def speedup_of(work, cores: int) -> float:
    """Serial / parallel wall time of ``cores`` copies of ``work``: the machine's own ceiling now
    for that kind of work."""
    import multiprocessing

    t0 = time.perf_counter()
    for i in range(cores):
        work(i)
    serial = time.perf_counter() - t0
    # fork (before Ray starts): the workers have the code already, no import is timed
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        t0 = time.perf_counter()
        pool.map(work, range(cores), chunksize=1)
        parallel = time.perf_counter() - t0
    return serial / parallel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candles", type=int, default=3000)
    ap.add_argument(
        "--steps", type=int, default=60, help="DQN steps (and imitation updates) per trial"
    )
    ap.add_argument(
        "--repeat", type=int, default=2, help="alternate the two runs N times, keep the fastest"
    )
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ceiling, conv_ceiling = speedup_of(_spin, cores), speedup_of(_convs, cores)
    t0 = time.perf_counter()
    init_ray(None, num_cpus=cores)
    ray_start = time.perf_counter() - t0
    plan, candles = plan_for(args.candles, args.steps, 1.0)
    serial = replace(plan, cpus_per_trial=float(cores))
    par, ser = [], []
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        for i in range(args.repeat):
            par.append(timed(plan, candles, Path(tmp) / f"parallel{i}"))
            ser.append(timed(serial, candles, Path(tmp) / f"serial{i}"))
    (par_wall, par_own, par_start), (ser_wall, ser_own, ser_start) = min(par), min(ser)
    walls = ", ".join(f"{w[0]:.1f}" for w in par), ", ".join(f"{w[0]:.1f}" for w in ser)
    print(f"walls: parallel {walls[0]} s; serial {walls[1]} s")
    speedup = ser_wall / par_wall
    overhead = (ser_wall - ser_own) / TRIALS
    print(
        f"cores {cores}, load average {os.getloadavg()[0]:.1f}; Ray start-up {ray_start:.1f} s (not counted)"
    )
    print(
        f"parallel: {par_wall:.1f} s wall for {TRIALS} trials ({par_own:.1f} s inside the trials)"
    )
    print(
        f"serial:   {ser_wall:.1f} s wall for {TRIALS} trials ({ser_own:.1f} s inside the trials)"
    )
    print(
        f"first trial started after {par_start:.1f} s (parallel), {ser_start:.1f} s (serial): "
        f"speedup of the walls after it {(ser_wall - ser_start) / (par_wall - par_start):.2f}"
    )
    target = 0.8 * cores
    print(
        f"RESULT parallel_speedup={speedup:.2f} overhead_s_per_trial={overhead:.2f} "
        f"speedup_target={target:.1f} speedup_target_met={'yes' if speedup >= target else 'no'} "
        f"overhead_target_met={'yes' if overhead <= 5 else 'no'} spin_speedup={ceiling:.2f} "
        f"conv_speedup={conv_ceiling:.2f}"
    )


if __name__ == "__main__":
    main()
