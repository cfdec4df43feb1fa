"""The sweep driver: Ray (embedded, or a cluster's), one Tune experiment per search, resume, and
the outputs (results.csv, the report) once the trials are through.

Grid search is one experiment over (strategy, grid configuration) x seed x fold, each a trial.
``--search optuna`` is one experiment per strategy (search.py): Optuna proposes a configuration,
Tune's Repeater runs it once per seed and fold, and Optuna learns the mean validation score over
them (never a test figure). The experiments live in ``DIR/tune`` (Tune's own state, for
``Tuner.restore``) beside ``DIR/trials`` (ours: what a trial wrote, the ground truth of what is
finished) and, for Optuna, ``DIR/optuna-<strategy>.json`` (its proposals, in order).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from chartrl.experiments.plan import Plan, save_plan
from chartrl.experiments.results import write_results
from chartrl.logs import get_logger

log = get_logger(__name__)

TUNE_DIR = "tune"


def init_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Start an embedded Ray with this machine's cores (no dashboard), or join the cluster at
    ``address``; False when Ray was already up (the caller owns it then)."""
    import logging

    import ray

    # Tune warns about every trial it has no result file for (those an interrupt stopped): noise.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    # The live table is ours (progress.py); Tune's newer console output ignores verbose=0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **common)
    else:  # "local": a new instance, never a stray cluster that happens to run on this machine
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            **common,
        )
    return True


def total_trials(plan: Plan) -> int:
    per_config = len(plan.seeds) * len(plan.folds)
    if plan.search == "optuna":
        return len(plan.strategies) * plan.trials * per_config
    return len(plan.cells()) * per_config


def _experiments(plan: Plan, out: Path) -> list[tuple[str, dict[str, Any], Any, int]]:
    """(name, param space, search algorithm, samples) of each Tune experiment still to run."""
    from ray import tune

    folds = list(range(len(plan.folds)))
    if plan.search == "grid":
        space = {
            "cell": tune.grid_search([list(c) for c in plan.cells()]),
            "seed": tune.grid_search(plan.seeds),
            "fold": tune.grid_search(folds),
        }
        return [(TUNE_DIR, space, None, 1)]
    from chartrl.experiments.search import searcher, study_done

    repeat = len(plan.seeds) * len(folds)
    return [
        (
            f"{TUNE_DIR}-{s}",
            {"strategy": s, "params": {p.name: p.tune_domain() for p in plan.params}},
            searcher(plan, out, s),
            plan.trials * repeat,
        )
        for s in plan.strategies
        if not study_done(plan, out, s)
    ]


def _tuner(
    plan: Plan, out: Path, name: str, space: dict, alg: Any, samples: int, cb: Any, resume: bool
) -> Any:
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(_trainable(), out_dir=str(out)),
        {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial},
    )
    path = out / name
    # Grid: unfinished trials continue (from the trainer's last epoch, see trainable.py), errored
    # ones get another go, finished ones are not run again. Optuna: a fresh experiment whose
    # study replays the proposals written in DIR (search.py says why), each unit continuing or
    # returning its result the same way.
    if resume and alg is None and tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            search_alg=alg,
            num_samples=samples,
            metric="score" if alg is None else None,
            mode="max" if alg is None else None,
            trial_dirname_creator=lambda t: t.trial_id,
            # One worker process runs trial after trial: torch and the plan are imported once.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(out),
            failure_config=tune.FailureConfig(max_failures=plan.max_failures),
            verbose=0,
            callbacks=[cb],
        ),
    )


def _trainable() -> Any:
    from chartrl.experiments.trainable import tune_trainable

    return tune_trainable


def run_trials(
    plan: Plan,
    candles: pd.DataFrame | None,
    out: Path,
    *,
    address: str | None = None,
    resume: bool = False,
    progress: bool = True,
    num_cpus: int | None = None,
    companions: Sequence[pd.DataFrame] = (),
) -> Path:
    """Run (or, with ``resume``, continue) the sweep's trials into ``out``, then write
    results.csv (its path). ``candles`` (and the ``companions``' candles, ``--series``) are
    stored with the plan on a new sweep (a resumed one reads its own back)."""
    import ray

    from chartrl.experiments.progress import ProgressTable

    out = Path(out).resolve()
    if not resume:
        save_plan(plan, candles, out, companions)
    started = init_ray(address, num_cpus)
    total = total_trials(plan)
    log.info("sweep_start", out=str(out), trials=total, resume=resume)
    try:
        with ProgressTable(total, show=progress) as cb:
            for name, space, alg, samples in _experiments(plan, out):
                _tuner(plan, out, name, space, alg, samples, cb, resume).fit()
    finally:
        if started:
            ray.shutdown()
    return write_results(out)


def run_sweep(plan: Plan, candles: pd.DataFrame | None, out: Path, **kwargs: Any) -> Path:
    """The trials (``run_trials``, same options), then the report over them: its path."""
    from chartrl.experiments.report import write_report

    results = run_trials(plan, candles, out, **kwargs)
    report = write_report(results.parent, reference=plan.reference)
    log.info("sweep_done", results=str(results), report=str(report))
    return report
