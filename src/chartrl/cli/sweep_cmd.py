"""chartrl sweep | compare: many training runs on Ray Tune (strategies x configurations x seeds x
walk-forward folds), and compare, the same engine with one fold and no search.

Every option is checked, and the folds fitted to the candles, before Ray starts: a bad value is
one line and exit code 2, with nothing started.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from chartrl.cli.train_options import add_training_options, fill_rules, given_options, load_series
from chartrl.errors import UsageError

# What --resume may still be given: where Ray runs and how it shows. The rest is the stored plan.
_PLAN_OPTIONS = ("strategies", "seeds", "folds", "param", "search", "trials", "spec")


def _engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine (Ray Tune)")
    g.add_argument(
        "--out", type=Path, required=True, help="sweep directory (results.csv, report.md, trials/)"
    )
    g.add_argument(
        "--address",
        help="join the Ray cluster there (auto, or HOST:PORT of `ray start --head`); default: an "
        "embedded Ray on this machine's cores",
    )
    g.add_argument("--cpus-per-trial", type=float, help="CPU cores each trial holds (default 1)")
    g.add_argument(
        "--gpus-per-trial", type=float, help="GPU share each trial holds, 0.5 = half (default 0)"
    )
    g.add_argument("--max-failures", type=int, help="retries of a crashing trial (default 1)")
    g.add_argument("--resume", action="store_true", help="continue the sweep stored in --out")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train strategies x configurations x seeds x walk-forward folds on Ray Tune; report",
    )
    p.add_argument("--strategies", help="comma list of neural strategies (default cnn,cnnrnn,gru)")
    p.add_argument("--seeds", type=int, help="seeds 1..N per configuration (default 3)")
    p.add_argument("--folds", type=int, help="walk-forward folds (default 3; docs/experiments.md)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="a searched TrainConfig field: choices a,b,c or a range LO:HI[:linear|log[:POINTS]] (repeatable)",
    )
    p.add_argument(
        "--search", help="grid (default: every combination) or optuna (--trials per strategy)"
    )
    p.add_argument("--trials", type=int, help="--search optuna: configurations tried per strategy")
    p.add_argument(
        "--spec", type=Path, metavar="FILE", help="TOML file with these fields (options win)"
    )
    _engine_options(p)
    add_training_options(p)
    p.set_defaults(func=_sweep, compare=False)

    c = sub.add_parser(
        "compare",
        help="train several policies with several seeds on one fold (a one-fold sweep); report",
    )
    c.add_argument(
        "--strategies", default="cnn,cnnrnn,gru,resnet", help="comma list of neural strategies"
    )
    c.add_argument("--seeds", type=int, default=3, help="seeds per strategy (default 3)")
    _engine_options(c)
    add_training_options(c)
    c.set_defaults(
        func=_sweep, compare=True, folds=1, param=[], search="grid", trials=None, spec=None
    )


def _positive(args: argparse.Namespace, name: str, value: Any, low: float, strict: bool) -> None:
    if value is not None and (value <= low if strict else value < low):
        raise UsageError(
            f"--{name.replace('_', '-')} must be {'>' if strict else '>='} {low:g}, got {value}"
        )


def _plan(args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    """Check every option, load the candles and fit the folds: the Plan, the judged series'
    candles and the further training series' (``--series A,B,..``: B onwards; else none)."""
    from chartrl.backtest.runner import first_chart_index
    from chartrl.experiments.folds import check_folds, purge_gap, sweep_folds
    from chartrl.experiments.params import (
        applicable,
        config_id,
        distinct_configurations,
        grid,
        parse_params,
    )
    from chartrl.experiments.plan import Plan
    from chartrl.experiments.spec import apply_spec
    from chartrl.experiments.trainable import check_companions
    from chartrl.strategies.registry import NEURAL_NAMES
    from chartrl.train.dqn import TrainConfig

    spec_train = apply_spec(args, args.spec) if args.spec else {}
    strategies = [x.strip() for x in (args.strategies or "cnn,cnnrnn,gru").split(",") if x.strip()]
    bad = [x for x in strategies if x not in NEURAL_NAMES]
    if bad or not strategies or len(set(strategies)) != len(strategies):
        raise UsageError(
            f"--strategies {args.strategies!r}: use a comma list of {', '.join(NEURAL_NAMES)}, each once"
        )
    seeds, folds = args.seeds or 3, args.folds or 3
    _positive(args, "seeds", seeds, 1, False)
    _positive(args, "folds", folds, 1, False)
    search = args.search or "grid"
    if search not in ("grid", "optuna"):
        raise UsageError(f"--search {search!r}: use grid or optuna")
    if search == "grid" and args.trials is not None:
        raise UsageError(
            "--trials counts Optuna's configurations; give --search optuna or drop --trials"
        )
    trials = args.trials or 10
    _positive(args, "trials", trials, 1, False)
    _positive(args, "cpus_per_trial", args.cpus_per_trial, 0, True)
    _positive(args, "gpus_per_trial", args.gpus_per_trial, 0, False)
    _positive(args, "max_failures", args.max_failures, 0, False)
    if args.validation_fraction is not None:
        raise UsageError(
            "--validation-fraction: a sweep's folds set the split; drop it (docs/experiments.md)"
        )
    params = parse_params(list(args.param or []))
    if search == "optuna" and not params:
        raise UsageError("--search optuna needs at least one --param to search")
    if search == "optuna" and trials > (most := distinct_configurations(params)):
        raise UsageError(
            f"--trials {trials}: the --param space holds only {int(most)} different "
            f"configurations; use --trials {int(most)} or less, or --search grid"
        )
    train = {**spec_train, **given_options(args)}
    configs = (
        grid(params) if search == "grid" else [{p.name: (p.choices or (p.low,))[0] for p in params}]
    )
    for config in configs:  # the combinations the trainer itself would refuse, refused now
        cfg = replace(TrainConfig(**train), **config)
        if cfg.imitation_target == "values" and cfg.oracle == "extrema":
            raise UsageError(
                "imitation_target values needs the dp oracle; drop oracle extrema from the sweep"
            )
    for s in strategies:
        if not any(applicable(s, {**train, **c}) for c in configs):
            raise UsageError(
                f"{s} has nothing to train: frame_stack other than 1 is the cnn's alone; "
                f"add frame_stack 1 to the values or drop {s}"
            )
    if search == "optuna" and "frame_stack" in {p.name for p in params} and strategies != ["cnn"]:
        raise UsageError(
            "--search optuna over frame_stack: only the cnn stacks frames; sweep --strategies cnn"
        )
    reference = getattr(args, "reference", None)  # a spec's; the paired differences' baseline
    cells = [config_id(s, c) for s in strategies for c in configs if applicable(s, {**train, **c})]
    if reference and reference not in {*strategies, *(cells if search == "grid" else [])}:
        raise UsageError(
            f"reference {reference!r}: use one of the strategies ({', '.join(strategies)}) or, "
            f"in a grid, one of its configurations ({', '.join(cells)})"
        )
    gpus = args.gpus_per_trial or 0.0
    if args.device == "cuda" and gpus == 0:
        raise UsageError("--device cuda needs --gpus-per-trial > 0 (a trial holds its GPU share)")
    s, candles, meta = load_series(args)
    companions: list[Any] = []
    if isinstance(candles, list):  # --series or model.train_series: the first one is judged
        (_, candles, _), companions = candles[0], candles[1:]
    rules = fill_rules(s, meta)
    windows = [
        p.high if p.is_range else max(p.choices) for p in params if p.name == "oracle_window"
    ]
    gap = purge_gap(s.chart.window, int(max([TrainConfig(**train).oracle_window, *windows])))
    fold_list = sweep_folds(len(candles), folds, gap)
    lanes = max([TrainConfig(**train).num_envs, *(c.get("num_envs", 0) for c in configs)])
    check_folds(fold_list, first_chart_index(candles, s.chart), lanes)
    check_companions(candles, fold_list, companions, s.chart)
    plan_meta = {k: meta[k] for k in ("series", "data_range", "fills")}
    if companions:  # every series, the judged one first, with its weight and fills
        plan_meta["training_series"] = meta["training_series"]
    plan = Plan(
        strategies=strategies,
        seeds=list(range(1, seeds + 1)),
        folds=fold_list,
        spec=s.chart,
        timeframe=s.market.timeframe,
        meta=plan_meta,
        rules=rules,
        train=train,
        param_texts=list(args.param or []),
        search=search,
        trials=trials,
        initial_cash=s.trading.initial_cash,
        device="auto" if gpus > 0 and not args.device else args.device or s.model.device,
        threads=args.threads or max(int(args.cpus_per_trial or 1), 1),
        cpus_per_trial=args.cpus_per_trial or 1.0,
        gpus_per_trial=gpus,
        max_failures=1 if args.max_failures is None else args.max_failures,
        reference=reference or "cnn",
        companions=[{"name": n, "rules": asdict(r)} for n, _, r in companions],
    )
    return plan, candles, [c for _, c, _ in companions]


def _sweep(args: argparse.Namespace) -> int:
    from chartrl.cli.app import settings
    from chartrl.experiments.plan import PLAN_FILE, load_plan
    from chartrl.experiments.results import RESULTS_FILE, trial_rows
    from chartrl.experiments.sweep import run_sweep, total_trials

    out: Path = args.out
    if args.resume:
        given = [n for n in _PLAN_OPTIONS if getattr(args, n, None) not in (None, [], False)]
        if not args.compare and given:
            raise UsageError(
                f"--resume continues the sweep stored in {out}; drop --{given[0].replace('_', '-')}"
            )
        settings(args)  # logging as configured
        plan, candles, companions = load_plan(out), None, []
    else:
        if (out / PLAN_FILE).exists():
            raise UsageError(
                f"{out} already holds a sweep; add --resume to continue it or choose another --out"
            )
        plan, candles, companions = _plan(args)
    report = run_sweep(
        plan,
        candles,
        out,
        address=args.address,
        resume=args.resume,
        progress=not args.no_progress,
        companions=companions,
    )
    rows = trial_rows(out)
    done = sum(r["status"] == "done" for r in rows)
    total = total_trials(plan)
    print(
        f"{done} of {total} trials done, {len(rows) - done} failed; written: {out / RESULTS_FILE}, {report}"
        + (f" (--resume {out} retries the failed, runs the rest)" if done < total else "")
    )
    return 0
