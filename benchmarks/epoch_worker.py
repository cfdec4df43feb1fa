"""One measurement of a training epoch's parts under whichever chartrl is first on PYTHONPATH.

benchmarks/train.py runs this file as a subprocess twice per repeat, once with PYTHONPATH at an
extracted copy of the reference commit's ``src`` and once at the current one, so the two codes are
timed by the same steps, interleaved under the same load of the moment. It only uses what both
codes have: ``train`` and ``TrainConfig`` (chartrl.train.dqn, before issue 10 chartrl.backtest.dqn),
``prepare_data`` and the validation (``chartrl.train.evaluation.validate``, the reference's
``dqn._validate``).

Printed, one JSON line per policy: ``step_s`` (one environment step of the lanes in steady state,
updates included: a run of 2S steps minus a run of S, every chart rendered beforehand), ``val_s`` (one greedy validation over the
whole validation part with its metrics, charts rendered beforehand), ``render_s`` (rendering
every chart of the history once) and ``epoch_s`` = steps per epoch x step_s + val_s + render_s,
the projected epoch of benchmarks/train.py. All are CPU seconds of this process
(``time.process_time``, one torch thread by default): on a machine shared with other work, wall
time mostly measures the others (the same S steps took 2.6x longer from one repeat to the next
on the shared 2-core machine), CPU time the work done. ``wall_step_s`` and ``wall_epoch_s`` are
the same by the wall clock (``--reference-clock wall`` of benchmarks/train.py, for a quiet machine: CPU
differences of a few updates turned out noisier still). Also, for the whole worker so far:
``cpu_total_s`` and ``wall_total_s`` (all its work: loading, rendering, every run, validations),
``sys_s`` (the kernel's share of those CPU seconds: page faults mostly), ``maxrss_mb`` (peak resident memory) and
``malloc`` (whether chartrl.allocator tuned malloc, as the CLI does; the reference code has none).

    PYTHONPATH=<src> python benchmarks/epoch_worker.py --csv PATH --policies cnn,cnnrnn [--norm batch]

``run_epoch_worker`` runs it so from another benchmark (train.py, allocator.py) and returns the rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

LANES = 8


def run_epoch_worker(
    src: Path,
    csv: Path,
    policies: str,
    steps: int,
    threads: int,
    norm: str | None = None,
    env: dict[str, str] | None = None,
) -> list[dict]:
    """This file as a subprocess with PYTHONPATH at ``src`` (and ``env`` added): its JSON rows,
    one per policy; SystemExit with the worker's last stderr line when it fails."""
    cmd = [sys.executable, __file__, "--csv", str(csv), "--policies", policies]
    cmd += ["--steps", str(steps), "--threads", str(threads)] + (["--norm", norm] if norm else [])
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(src)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=full_env)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"error: epoch_worker.py ({src}) failed: {tail[0]}")
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def _tune_malloc() -> bool:
    try:  # as the CLI does (chartrl.allocator); the reference code has no such module
        from chartrl import allocator
    except ImportError:
        return False
    return allocator.tune()


def _modules():
    try:  # since issue 10's layout
        from chartrl.train import dqn, env
        from chartrl.train.evaluation import validate
    except ImportError:  # the reference: training lived in backtest/
        from chartrl.backtest import dqn, env

        validate = dqn._validate
    return dqn, env.prepare_data, validate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, required=True)
    ap.add_argument("--policies", default="cnn,cnnrnn")
    ap.add_argument("--steps", type=int, default=96, help="S: a multiple of 16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--norm", default=None, help="TrainConfig.norm, where the code has it")
    args = ap.parse_args()
    wall_start = time.perf_counter()
    malloc = _tune_malloc()
    torch.set_num_threads(args.threads)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    from chartrl.account.fills import MarketRules
    from chartrl.chart.spec import ChartSpec
    from chartrl.market.importer import import_csv
    from chartrl.market.store import CandleStore

    dqn, prepare_data, validate = _modules()
    with tempfile.TemporaryDirectory() as tmp:
        store = CandleStore(tmp)
        import_csv(args.csv, store, "binance", "BTC/USDT", "1h")
        candles = store.load("binance", "BTC/USDT", "1h")
    spec = ChartSpec()
    data = prepare_data(candles, spec, "1h", validation_fraction=0.15)
    renderer = data.frames.renderer
    renderer.render(data.train[:256])
    t, w = time.process_time(), time.perf_counter()
    block = data.train[-2048:]
    renderer.render(block)
    share = (len(data.train) + len(data.validation)) / len(block)
    render_s = share * (time.process_time() - t)
    wall_render_s = share * (time.perf_counter() - w)
    # Every chart rendered before the timed runs: a step's CPU time is then acting and learning
    # (replay samples reach across the whole history; rendering is render_s, once per epoch).
    for i in range(0, len(data.train), 2048):
        data.frames.get(data.train[i : i + 2048])
    data.frames.get(data.validation)
    fields = {f.name for f in dataclasses.fields(dqn.TrainConfig)}
    extra = {"eval_every": 10**9} if "eval_every" in fields else {}  # the epoch end only
    if args.norm is not None:
        if "norm" not in fields:
            print(f"error: this code has no TrainConfig.norm (--norm {args.norm})", file=sys.stderr)
            return 2
        extra["norm"] = args.norm
    meta = {
        "chart_spec": spec,
        "series": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"},
    }
    # A discarded run first: the first train() of a process pays one-time costs (imports, first
    # allocations) that made the first policy's S-step run cost more CPU than its 2S one.
    with tempfile.TemporaryDirectory() as tmp:
        warm = dqn.TrainConfig(
            stages=("dqn",), epochs=1, learning_starts=0, max_steps_per_epoch=16, **extra
        )
        dqn.train(args.policies.split(",")[0], data, warm, Path(tmp) / "m", meta, progress=False)
    for name in args.policies.split(","):
        rows, cpu, wall, policy = [], [], [], None
        for steps in (args.steps, 2 * args.steps):
            cfg = dqn.TrainConfig(
                stages=("dqn",),
                epochs=1,
                learning_starts=0,
                max_steps_per_epoch=steps,
                validation_fraction=0.15,
                **extra,
            )
            with tempfile.TemporaryDirectory() as tmp:
                c0, w0 = time.process_time(), time.perf_counter()
                res = dqn.train(name, data, cfg, Path(tmp) / "m", meta, progress=False)
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
            rows.append(res.history[-1])
            policy = res.policy
        a, b = rows
        step_s = (cpu[1] - cpu[0]) / args.steps
        wall_step_s = (wall[1] - wall[0]) / args.steps
        t, w = time.process_time(), time.perf_counter()
        validate(policy, data, MarketRules(), 10_000.0, torch.device("cpu"))
        val_s, wall_val_s = time.process_time() - t, time.perf_counter() - w
        steps_per_epoch = len(data.train) // LANES - 1
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(
            json.dumps(
                {
                    "policy": name,
                    "step_s": step_s,
                    "wall_step_s": wall_step_s,
                    "val_s": val_s,
                    "render_s": render_s,
                    "epoch_s": steps_per_epoch * step_s + val_s + render_s,
                    "wall_epoch_s": steps_per_epoch * wall_step_s + wall_val_s + wall_render_s,
                    "updates": int(b["updates"]) - int(a["updates"]),
                    "cpu_total_s": usage.ru_utime + usage.ru_stime,
                    "wall_total_s": time.perf_counter() - wall_start,
                    "sys_s": usage.ru_stime,
                    "maxrss_mb": usage.ru_maxrss / 1024,
                    "malloc": malloc,
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
