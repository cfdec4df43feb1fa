"""One unit of a sweep, as a Ray Tune trial runs it: train a strategy with its params and seed on
one fold's training range, let its validation range choose the checkpoint (the trainer's
``best/``), judge that checkpoint on the fold's test range, and write the trial's files.

The trial's directory ``DIR/trials/<trial_id>`` is the trainer's model directory, so an
interrupted trial resumes from its last finished epoch (``train(resume=True)``), and a finished
one (``result.json`` with status done) is never trained again, whatever Tune's own experiment
state says after a SIGKILL of the driver.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from chartrl.atomic import atomic_write
from chartrl.backtest.walkforward import Fold
from chartrl.errors import UsageError
from chartrl.experiments.folds import MIN_TRAIN
from chartrl.experiments.params import config_id, params_json, trial_id
from chartrl.experiments.plan import Plan, load_candles, load_companions, load_plan
from chartrl.logs import get_logger, one_line_error
from chartrl.train.evaluation import VALIDATION_METRICS

log = get_logger(__name__)

RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
ATTEMPTS_FILE = "attempts.json"
UNIT_FILE = "unit.json"
SPLIT_METRICS = VALIDATION_METRICS
"""A split's figures in results.csv: the very ones training validates with (train/evaluation.py)."""


@dataclass(frozen=True)
class Unit:
    """What one trial trains: a configuration, a seed and a fold."""

    strategy: str
    params: dict[str, Any]
    seed: int
    fold: int

    @property
    def trial_id(self) -> str:
        return trial_id(self.strategy, self.params, self.seed, self.fold)

    @property
    def config_id(self) -> str:
        return config_id(self.strategy, self.params)


def unit_of(config: dict[str, Any], plan: Plan) -> Unit:
    """The unit a Tune trial config names: grid configs carry it whole; an Optuna trial carries
    the strategy and sampled params, and the Repeater's index picks its seed and fold."""
    if "__trial_index__" in config:
        seed_i, fold = divmod(int(config["__trial_index__"]), len(plan.folds))
        return Unit(config["strategy"], dict(config.get("params") or {}), plan.seeds[seed_i], fold)
    from chartrl.experiments.params import grid

    strategy, index = config["cell"]
    params = grid(plan.params)[int(index)]
    return Unit(strategy, params, int(config["seed"]), int(config["fold"]))


def trial_dir(out: Path, unit: Unit) -> Path:
    return Path(out) / "trials" / unit.trial_id


def read_result(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, body: dict[str, Any]) -> None:
    atomic_write(path, lambda fh: fh.write((json.dumps(body, default=str) + "\n").encode()))


def _attempt(path: Path) -> int:
    """Count this start of the unit (a resumed or retried trial is one more attempt)."""
    try:
        n = int(json.loads((path / ATTEMPTS_FILE).read_text())["attempts"]) + 1
    except (OSError, ValueError, KeyError):
        n = 1
    path.mkdir(parents=True, exist_ok=True)
    _write_json(path / ATTEMPTS_FILE, {"attempts": n})
    return n


def attempts(path: Path) -> int:
    try:
        return int(json.loads((path / ATTEMPTS_FILE).read_text())["attempts"])
    except (OSError, ValueError, KeyError):
        return 0


def fold_data(
    candles: pd.DataFrame,
    plan: Plan,
    fold: Fold,
    companions: Sequence[tuple[str, pd.DataFrame, Any]] = (),
) -> Any:
    """The trainer's TrainData for one fold: candles up to the validation end only (the test
    range is not even loaded), training decisions inside the training range, validation ones
    inside the validation range, the oracle cut at the end of training.

    ``companions`` (``--series``: (name, candles, rules) of the further training series) add
    training candles only: each series' candles from the fold's first training candle to its
    last, by time, all of them training (no validation, no test: the judged series alone
    chooses and is judged). Nothing of a companion lies after the judged series' training
    range, so no training chart holds a later candle of a correlated market."""
    import numpy as np

    from chartrl.train.series import prepare_series

    span = _train_span(candles, fold)

    def split(k: int, name: str, valid: np.ndarray, start: int, n: int) -> tuple:
        if k == 0:  # the judged series, first: global indices are its own
            train = valid[(valid >= fold.train[0]) & (valid < fold.train[1])]
            validation = valid[(valid >= fold.val[0]) & (valid < fold.val[1])]
            return train, validation, fold.train[1] + 1
        return _companion_train(name, fold, span, valid, n) + start, valid[:0], n + start

    named = plan.meta.get("training_series") or [{"name": "", "weight": None}]
    weights = [t.get("weight") for t in named]
    return prepare_series(
        [(named[0]["name"], candles.iloc[: fold.val[1] + 1].reset_index(drop=True))]
        + [(name, _cut(c, span)) for name, c, _ in companions],
        plan.spec,
        plan.timeframe,
        rules=[plan.rules, *(r for _, _, r in companions)],
        weights=None if None in weights else weights,
        split=split,
    )


def _train_span(candles: pd.DataFrame, fold: Fold) -> tuple[Any, Any]:
    """The first and last timestamps of the judged series' training range in ``fold``."""
    ts = candles["timestamp"]
    return ts.iloc[fold.train[0]], ts.iloc[fold.train[1]]


def _cut(candles: pd.DataFrame, span: tuple[Any, Any]) -> pd.DataFrame:
    """A further series' candles inside ``span`` (by date): all a fold shows of it."""
    ts = candles["timestamp"]
    return candles[(ts >= span[0]) & (ts <= span[1])].reset_index(drop=True)


def _companion_train(name: str, fold: Fold, span: tuple[Any, Any], valid: Any, n: int) -> Any:
    """A further series' training decisions in its cut of ``n`` candles whose charts exist at
    ``valid``: every chart but the last candle's (it would fill after the cut). UsageError when
    fewer than MIN_TRAIN."""
    train = valid[valid < n - 1]
    if len(train) < MIN_TRAIN:
        raise UsageError(
            f"--series {name}: only {len(train)} training charts in fold {fold.index}'s "
            f"training range ({span[0]:%Y-%m-%d} .. {span[1]:%Y-%m-%d}), fewer than {MIN_TRAIN}; "
            "drop that series, or use fewer --folds or a later --from"
        )
    return train


def check_companions(
    candles: pd.DataFrame, folds: Sequence[Fold], companions: Sequence[tuple[str, Any, Any]], spec
) -> None:
    """Refuse, before any trial starts, a further training series that gives a fold's training
    range too few charts (it starts later than the judged series, say), by ``fold_data``'s own
    cut and rule."""
    import numpy as np

    from chartrl.chart.tensor_render import TensorRenderer

    for name, c, _ in companions:
        for f in folds:
            span = _train_span(candles, f)
            cut = _cut(c, span)
            valid = np.asarray(TensorRenderer(cut, spec, "cpu").valid_indices)
            _companion_train(name, f, span, valid, len(cut))


def judge(
    policy: Any, candles: pd.DataFrame, plan: Plan, span: tuple[int, int]
) -> tuple[dict, Any, Any]:
    """The backtest's metrics of ``policy`` deciding over the candle range ``span`` (seeing no
    candle after it), buy and hold's over the same candles, and both runs."""
    from chartrl.backtest.walkforward import evaluate_runs
    from chartrl.timeframe import periods_per_year

    ts = candles["timestamp"]
    return evaluate_runs(
        policy,
        candles.iloc[: span[1] + 1],
        plan.spec,
        plan.rules,
        ts.iloc[span[0]],
        ts.iloc[span[1]],
        initial_cash=plan.initial_cash,
        periods_per_year=periods_per_year(plan.timeframe),
        threads=plan.threads,
    )


def _split(
    prefix: str, candles: pd.DataFrame, span: tuple[int, int], metrics: dict
) -> dict[str, Any]:
    ts = candles["timestamp"]
    bh = metrics["baselines"]["buyhold"]
    return {
        f"{prefix}_from": ts.iloc[span[0]].isoformat(),
        f"{prefix}_until": ts.iloc[span[1]].isoformat(),
        f"{prefix}_candles": span[1] - span[0] + 1,
        **{f"{prefix}_{k}": metrics.get(k) for k in SPLIT_METRICS},
        f"{prefix}_buy_hold_return": bh.get("total_return"),
        f"{prefix}_buy_hold_sharpe": bh.get("sharpe"),
    }


def _equity_csv(result: Any, baseline: Any) -> bytes:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["timestamp", "equity", "buy_hold"])
    for t, e, b in zip(result.candles["timestamp"], result.equity, baseline.equity, strict=True):
        w.writerow([t.isoformat(), f"{e:.6f}", f"{b:.6f}"])
    return buf.getvalue().encode()


def base_row(unit: Unit, status: str, error: str, tries: int) -> dict[str, Any]:
    return {
        "trial_id": unit.trial_id,
        "strategy": unit.strategy,
        "config_id": unit.config_id,
        "params": params_json(unit.params),
        "seed": unit.seed,
        "fold": unit.fold,
        "status": status,
        "error": error,
        "attempts": tries,
    }


def run_unit(
    unit: Unit,
    plan: Plan,
    candles: pd.DataFrame,
    out: Path,
    companions: Sequence[tuple[str, pd.DataFrame, Any]] = (),
) -> dict[str, Any]:
    """Train, choose, judge and record one unit; its result row (also ``result.json``).
    ``companions``: the further training series of a ``--series`` sweep (``fold_data``)."""
    import torch

    from chartrl.train import checkpoint as ckpt
    from chartrl.train.distributed import pick_device
    from chartrl.train.dqn import TrainConfig, train

    path = trial_dir(out, unit)
    done = read_result(path)
    if done and done.get("status") == "done":
        return done  # finished before an interruption: never trained twice
    tries = _attempt(path)
    _write_json(path / UNIT_FILE, base_row(unit, "running", "", tries))
    t0 = time.perf_counter()
    if plan.threads:
        torch.set_num_threads(plan.threads)
    tb = Path(out) / "tensorboard" / unit.trial_id
    resume = (path / ckpt.META_FILE).is_file()
    if not resume:  # a start killed before its first epoch ended: nothing to continue from
        for p in (path / ckpt.BEST_DIR, tb):
            shutil.rmtree(p, ignore_errors=True)
    fold = plan.folds[unit.fold]
    cfg = replace(TrainConfig(**plan.train), **unit.params, seed=unit.seed, validation_fraction=0.0)
    data = fold_data(candles, plan, fold, companions)
    ts = candles["timestamp"]
    meta = {
        **plan.meta,
        "chart_spec": plan.spec,
        "data_range": {
            **plan.meta["data_range"],
            "until": ts.iloc[fold.val[1]].isoformat(),
            "candles": fold.val[1] + 1,
            "validation_from": ts.iloc[fold.val[0]].isoformat(),
            "source": f"{plan.meta['data_range'].get('source')} sweep fold {fold.index}",
        },
    }
    if companions:  # model.json: every series with the range this fold trained on
        meta["training_series"] = [
            {**t, **p.info} for t, p in zip(plan.meta["training_series"], data.series, strict=True)
        ]
    device = pick_device(plan.device) if plan.gpus_per_trial > 0 else torch.device("cpu")
    log.info("trial_start", trial=unit.trial_id, attempt=tries, resume=resume)
    train(
        unit.strategy,
        data,
        cfg,
        path,
        meta,
        device=device,
        rules=plan.rules,
        initial_cash=plan.initial_cash,
        resume=resume,
        progress=False,
        tb_dir=tb,
    )
    best = (ckpt.read_meta(path).get("checkpoint") or {}).get("best")
    chosen = path / ckpt.BEST_DIR if best else path  # no validation yet: the last network
    record = best or ckpt.read_meta(path).get("checkpoint") or {}
    policy, _ = ckpt.load_model(chosen, "cpu", expect_spec=plan.spec)
    val, _, _ = judge(policy, candles, plan, fold.val)
    test, result, baseline = judge(policy, candles, plan, fold.test)
    atomic_write(path / "test_equity.csv", lambda fh: fh.write(_equity_csv(result, baseline)))
    row = {
        **base_row(unit, "done", "", tries),
        "chosen_epoch": record.get("epoch"),
        "chosen_updates": record.get("updates"),
        "seconds": round(time.perf_counter() - t0, 3),
        **_split("val", candles, fold.val, val),
        **_split("test", candles, fold.test, test),
    }
    _write_json(path / RESULT_FILE, row)
    (path / ERROR_FILE).unlink(missing_ok=True)
    log.info(
        "trial_done", trial=unit.trial_id, val_sharpe=row["val_sharpe"], seconds=row["seconds"]
    )
    return row


_CACHE: dict[str, tuple[Plan, pd.DataFrame, list]] = {}


def tune_trainable(config: dict[str, Any], out_dir: str) -> None:
    """The Ray Tune function trainable: run the unit; report its validation score (the search's
    objective: never a test figure) and the row."""
    from ray import tune

    from chartrl import allocator
    from chartrl.train.monitor import selection_score

    allocator.tune()  # a Ray worker never ran the CLI's main
    if out_dir not in _CACHE:  # one read per worker process, not per trial
        plan = load_plan(Path(out_dir))
        _CACHE[out_dir] = (plan, load_candles(Path(out_dir)), load_companions(Path(out_dir), plan))
    plan, candles, companions = _CACHE[out_dir]
    unit = unit_of(config, plan)
    try:
        row = run_unit(unit, plan, candles, Path(out_dir), companions)
    except Exception as exc:
        path = trial_dir(Path(out_dir), unit)
        path.mkdir(parents=True, exist_ok=True)
        (path / ERROR_FILE).write_text(one_line_error(exc, 500) + "\n")
        raise
    score = selection_score({"sharpe": row.get("val_sharpe")})
    tune.report({"score": score, "unit": unit.trial_id, "seconds": row["seconds"]})
