"""Training throughput per policy on the shared BTC history (synthetic of the same length if absent).

For each policy DQN runs ``--steps`` environment steps (8 lanes) in steady state (updates every
16 steps, timed as the difference of a run of 2x and 1x the steps), at the default ChartSpec (window 250, 100x140) and default
hyperparameters. Reported: training transitions/s (acting + updates, rendering excluded), the
renderer's frames/s, the projected time of one full epoch over the whole history (training part
walked once, every chart rendered once, validation greedy run), and rendering's share of it.
Reference measured in the same run: forward+backward of the cnn encoder on a fixed 64-frame batch
(``ref_s``); projections are also given in units of it. Targets: cnnrnn epoch < 300 s, rendering
< 10 %.

Evaluation every N updates (``--eval-every``): a training run that validates every 4 updates
measures, interleaved so both see the same load, one validation (greedy run over the whole
validation part, its metrics and skill test) and the training time per update (acting included).
Projected: the validations a default run makes (10 epochs: the 10 epoch ends; the README's
``--epochs 3``: 10, epoch ends included) against that run's training time. Target: <= 10 %.

Against the reference code (``--reference``, default the last commit before issue 10's work:
training still in ``chartrl.backtest``): ``git archive`` of its ``src`` into a temporary folder,
then benchmarks/epoch_worker.py as a subprocess with PYTHONPATH at it or at the current ``src``,
alternately (reference, current, ..., then the reverse order, so a drift of the load falls on
both), each timing the same steps and one validation and projecting an epoch. Per policy the
ratio current / reference of each repeat, and their median, by the wall clock
(``--reference-clock wall``, the default: run it on a quiet machine) or in CPU seconds of the
worker (``cpu``: differences of a few updates proved noisier still). Target: <= 1.10 (an epoch may not
regress more than 10 %). ``--reference-norm batch`` adds the current code under ``--norm batch``
(the reference's BatchNorm) to tell the normalisation's share of a difference.

    .venv/bin/python benchmarks/train.py [--steps 40] [--threads 1] [--policies cnn,cnnrnn,gru,resnet]
        [--reference COMMIT|none] [--reference-repeats 2] [--reference-norm batch]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "Binance_BTCUSDT_1h.csv"
TARGET_SECONDS = 300.0
EVAL_TARGET = 0.10
REGRESSION_TARGET = 1.10
REFERENCE = "cae23bdbafb49910309ce107b121e297eefa4ca0"
"""The last commit before issue 10's work (its first, 6cf92c2, moved training to train/)."""
LANES = 8


def reference_ratios(
    commit: str,
    csv: Path,
    policies: str,
    steps: int,
    threads: int,
    repeats: int,
    norm: str | None,
    clock: str,
) -> dict[str, dict[str, list[float]]]:
    """Projected epoch seconds per variant and policy, one value per repeat, the variants run
    alternately as subprocesses (benchmarks/epoch_worker.py)."""
    import io
    import subprocess
    import tarfile

    from epoch_worker import run_epoch_worker

    with tempfile.TemporaryDirectory(prefix="chartrl-ref-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "src"], check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        variants: dict[str, tuple[Path, str | None]] = {
            "reference": (Path(tmp) / "src", None),
            "current": (ROOT / "src", None),
        }
        if norm:
            variants[f"current-{norm}"] = (ROOT / "src", norm)
        out: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
        for r in range(repeats):
            order = list(variants) if r % 2 == 0 else list(variants)[::-1]
            for v in order:
                src, v_norm = variants[v]
                for row in run_epoch_worker(src, csv, policies, steps, threads, v_norm):
                    epoch = row["wall_epoch_s" if clock == "wall" else "epoch_s"]
                    out[v].setdefault(row["policy"], []).append(epoch)
                    print(
                        f"  repeat {r + 1} {v:14s} {row['policy']:7s} epoch {row['epoch_s']:7.1f}"
                        f" CPU s, {row['wall_epoch_s']:7.1f} wall s (step {row['step_s'] * 1000:.1f} ms, wall"
                        f" {row['wall_step_s'] * 1000:.1f} ms; validation {row['val_s']:.1f} s,"
                        f" render {row['render_s']:.1f} s)",
                        flush=True,
                    )
    return out


def eval_cost(name: str, data, meta: dict, blocks: int) -> tuple[float, float]:
    """(seconds per validation, training seconds per update) measured in one training run that
    validates every 4 updates, so both share the machine's load of the moment: ``blocks`` blocks
    of 4 updates (64 steps of 8 lanes) each followed by a validation over the whole validation
    part (its charts rendered beforehand, as a real run renders them once)."""
    from chartrl.train.dqn import TrainConfig, train

    data.frames.get(data.validation)
    cfg = TrainConfig(
        stages=("dqn",),
        epochs=1,
        learning_starts=0,
        max_steps_per_epoch=64 * blocks + 48,  # the last block's validation is not near the end
        eval_every=4,
        validation_fraction=0.15,
    )
    with tempfile.TemporaryDirectory() as tmp:
        hist = train(name, data, cfg, Path(tmp) / "m", meta, progress=False).history
    row = hist[-1]
    evals = [h for h in hist if h["kind"] == "eval"]
    val = float(row["eval_seconds"]) / len(evals)
    training = float(row["seconds"]) - float(row["eval_seconds"]) - float(row["render_seconds"])
    return val, training / int(row["updates"])


def eval_ratio(
    epochs: int, train_candles: int, val_s: float, update_s: float
) -> tuple[int, int, float]:
    """(eval_every, validations, their time / training time) of a default run of ``epochs``."""
    from chartrl.train.dqn import TrainConfig
    from chartrl.train.monitor import eval_every_for, planned_updates, validation_points

    cfg = TrainConfig(epochs=epochs)
    steps = train_candles // LANES - 1  # ReplayEnv.steps_per_epoch for the default lanes
    every = eval_every_for(cfg, steps, LANES)
    count = validation_points(cfg, steps, LANES)  # epoch ends included
    return every, count, count * val_s / (planned_updates(cfg, steps, LANES) * update_s)


def load_candles(csv: Path):
    from chartrl.market.importer import import_csv
    from chartrl.market.store import CandleStore
    from chartrl.testing.synthetic import synthetic_candles

    if csv.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            store = CandleStore(tmp)
            import_csv(csv, store, "binance", "BTC/USDT", "1h")
            return store.load("binance", "BTC/USDT", "1h"), "shared"
    return synthetic_candles(33_400, seed=7), "synthetic"


def reference_seconds() -> float:
    from chartrl.strategies.cnn import ConvEncoder

    torch.manual_seed(0)
    enc = ConvEncoder(3, 100, 140)
    x = torch.randint(0, 256, (64, 3, 100, 140), dtype=torch.uint8)
    enc(x).sum().backward()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        enc(x).sum().backward()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=Path(os.environ.get("CHARTRL_BENCH_CSV", SHARED)))
    ap.add_argument(
        "--steps",
        type=int,
        default=48,
        help="steady-state environment steps (of 8 lanes) timed per policy; a multiple of 16",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads (default: torch's)",
    )
    ap.add_argument("--policies", default="cnn,cnnrnn,gru,resnet")
    ap.add_argument(
        "--eval-blocks",
        type=int,
        default=3,
        help="validations (each after 4 updates) in the evaluation-cost run per policy",
    )
    ap.add_argument(
        "--reference",
        default=REFERENCE,
        help="commit to time against (default: the last before issue 10); none: skip",
    )
    ap.add_argument("--reference-repeats", type=int, default=2)
    ap.add_argument("--reference-steps", type=int, default=64, help="S of the workers (x16)")
    ap.add_argument("--reference-norm", default=None, help="also the current code with this norm")
    ap.add_argument("--reference-only", action="store_true", help="skip the throughput part")
    ap.add_argument(
        "--reference-clock",
        choices=("wall", "cpu"),
        default="wall",
        help="which projected epoch the ratios compare (wall: on a quiet machine)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parts = [] if args.reference_only else throughput(args)
    if args.reference != "none":
        parts += regression(args)
    print("RESULT " + " ".join(parts))


def regression(args: argparse.Namespace) -> list[str]:
    """The epoch time of the current code against the reference's, measured in this run."""
    if not args.csv.is_file():
        print(f"reference: {args.csv} absent, epoch time not compared")
        return ["regression_target_met=unmeasured"]
    print(
        f"reference {args.reference[:12]} against the current code, {args.reference_repeats}"
        f" repeats, {args.reference_clock} clock:"
    )
    times = reference_ratios(
        args.reference,
        args.csv,
        args.policies,
        args.reference_steps,
        args.threads,
        args.reference_repeats,
        args.reference_norm,
        args.reference_clock,
    )
    parts, worst = [], 0.0
    ref = times["reference"]
    for variant, by_policy in times.items():
        if variant == "reference":
            continue
        for name, secs in by_policy.items():
            ratios = [a / b for a, b in zip(secs, ref[name], strict=True)]
            med = float(np.median(ratios))
            tag = variant.removeprefix("current").lstrip("-")
            print(
                f"{name:7s} {variant}: epoch {np.median(secs):.1f} s against {np.median(ref[name]):.1f} s;"
                f" ratio per repeat {', '.join(f'{x:.3f}' for x in ratios)}, median {med:.3f}"
            )
            parts.append(f"{name}{'_' + tag if tag else ''}_epoch_time_ratio={med:.3f}")
            if variant == "current":
                worst = max(worst, med)
    parts.insert(0, f"reference={args.reference[:12]} epoch_time_ratio={worst:.3f}")
    parts.append(f"regression_target_met={'yes' if worst <= REGRESSION_TARGET else 'no'}")
    return parts


def throughput(args: argparse.Namespace) -> list[str]:
    """Throughput per policy and the cost of validating; the RESULT fields."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    from chartrl.account.fills import MarketRules
    from chartrl.chart.spec import ChartSpec
    from chartrl.strategies.registry import build_policy
    from chartrl.train.dqn import TrainConfig, train
    from chartrl.train.env import prepare_data
    from chartrl.train.evaluation import greedy_run, run_metrics

    candles, source = load_candles(args.csv)
    spec = ChartSpec()
    n = len(candles)
    ref = reference_seconds()
    print(
        f"data: {source}, {n} candles; threads {torch.get_num_threads()}; reference (cnn encoder fwd+bwd, 64 frames): {ref:.3f} s"
    )

    data = prepare_data(candles, spec, "1h", validation_fraction=0.15)
    # The renderer alone, on a contiguous run as the frame cache asks for it.
    renderer = data.frames.renderer
    renderer.render(data.train[:256])
    t = time.perf_counter()
    block = data.train[5000:7048]
    renderer.render(block)
    render_fps = len(block) / (time.perf_counter() - t)
    all_frames = len(data.train) + len(data.validation)
    render_epoch = all_frames / render_fps
    print(
        f"renderer: {render_fps:.0f} frames/s -> {render_epoch:.1f} s to render all {all_frames} charts once"
    )

    results = {}
    meta = {
        "chart_spec": spec,
        "series": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"},
    }
    for name in args.policies.split(","):
        # Two runs, S and 2S steps: their difference is S steps in steady state (replay already
        # sampleable, one update every train_frequency steps), without start-up costs.
        runs = []
        for steps in (args.steps, 2 * args.steps):
            cfg = TrainConfig(
                stages=("dqn",),
                epochs=1,
                learning_starts=0,
                max_steps_per_epoch=steps,
                validation_fraction=0.15,
                eval_every=10**9,  # training alone; evaluation is measured below
            )
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(
                    train(name, data, cfg, Path(tmp) / "m", meta, progress=False).history[-1]
                )
        a, b = runs
        train_s = (float(b["seconds"]) - float(b["render_seconds"])) - (
            float(a["seconds"]) - float(a["render_seconds"])
        )
        updates = int(b["updates"]) - int(a["updates"])
        tps = (float(b["transitions"]) - float(a["transitions"])) / train_s
        row = {"updates": updates}
        # Validation: greedy run over a slice, scaled to the whole validation part.
        policy = build_policy(name, spec)
        sl = data.validation[:512]
        data.frames.get(sl)  # rendered already or now; not part of the greedy timing
        t = time.perf_counter()
        run = greedy_run(policy, data.frames, data.arrays, sl, 10_000.0, MarketRules())
        run_metrics(run, "1h")
        val_s = (time.perf_counter() - t) * len(data.validation) / len(sl)
        epoch_train = len(data.train) / tps
        epoch = epoch_train + val_s + render_epoch
        share = render_epoch / epoch
        one_val, per_update = eval_cost(name, data, meta, args.eval_blocks)
        ratios = {e: eval_ratio(e, len(data.train), one_val, per_update) for e in (10, 3)}
        results[name] = (tps, epoch, share, ratios)
        print(
            f"{name:7s} {tps:8.1f} transitions/s ({int(row['updates'])} updates in {train_s:.1f} s) | projected epoch "
            f"{epoch:7.1f} s = train {epoch_train:.1f} + validation {val_s:.1f} + render {render_epoch:.1f} | "
            f"render share {share:.1%} | epoch / ref {epoch / ref:.0f}"
        )
        print(
            f"{'':7s} same run, interleaved: one validation {one_val:.1f} s, training "
            f"{per_update:.2f} s per update (acting included)"
        )
        for e, (every, count, ratio) in ratios.items():
            print(
                f"{'':7s} --epochs {e}: eval every {every or 'epoch end only'} updates -> "
                f"{count} validations, {ratio:.1%} of the training time"
            )
    c = results.get("cnnrnn")
    parts = [f"{k}_epoch_s={v[1]:.0f}" for k, v in results.items()]
    parts += [
        f"{k}_eval_ratio_e{e}={r[2]:.3f}" for k, v in results.items() for e, r in v[3].items()
    ]
    worst = max(r[2] for v in results.values() for r in v[3].values())
    parts.append(f"eval_ratio_target_met={'yes' if worst <= EVAL_TARGET else 'no'}")
    verdict = ""
    if c:
        verdict = f" cnnrnn_target_met={'yes' if c[1] < TARGET_SECONDS and c[2] < 0.10 else 'no'} cnnrnn_render_share={c[2]:.3f}"
    head = f"data={source} candles={n} threads={torch.get_num_threads()} ref_s={ref:.3f} render_fps={render_fps:.0f}"
    return [head, *parts] + ([verdict.strip()] if verdict else [])


if __name__ == "__main__":
    sys.exit(main())
