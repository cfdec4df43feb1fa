"""chartrl train: train a chart policy (``compare`` and ``sweep`` live in sweep_cmd.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chartrl.cli.train_options import (
    OPTIONS,
    SYNTHETIC,
    add_training_options,
    fill_rules,
    given_options,
    load_series,
    prepare,
)
from chartrl.errors import UsageError

# What a resumed run may change: how far it goes and which stages it runs.
_RESUMABLE = ("epochs", "imitation_epochs", "stages")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a chart policy (imitation of the oracle, then Double DQN)"
    )
    p.add_argument("--strategy", help="cnn, cnnrnn, gru or resnet (default: config model.strategy)")
    p.add_argument("--seed", type=int, help="random seed (default 1)")
    p.add_argument(
        "--out", type=Path, help="model directory to write (model.pt, model.json, history.csv, tb/)"
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue the run in DIR with its hyperparameters and data (weights, optimizer, counters)",
    )
    add_training_options(p)
    p.set_defaults(func=_train)


def _resume_config(args: argparse.Namespace, saved: dict[str, Any], given: dict[str, Any]) -> Any:
    """The saved run's hyperparameters; an explicitly given option may only extend it."""
    from dataclasses import replace

    from chartrl.train.dqn import train_config

    base = train_config(saved.get("hyperparameters") or {})
    for name, value in given.items():
        if name not in _RESUMABLE and value != getattr(base, name):
            opt = OPTIONS[name][0]
            raise UsageError(
                f"--resume {args.resume}: {opt} {value} but the run was trained with {name} = {getattr(base, name)}; "
                f"drop {opt} to continue it, or train anew into another --out"
            )
    done = int((saved.get("counters") or {}).get("dqn_epochs", 0))
    if given.get("epochs", done) < done:
        raise UsageError(
            f"--resume {args.resume}: --epochs {given['epochs']} but {done} DQN epochs are done; --epochs is a total"
        )
    return replace(base, **given)


def _resume_data_args(args: argparse.Namespace, saved: dict[str, Any]) -> None:
    """Default the series and range to the saved run's, so a grown store does not shift its split."""
    series, span = saved.get("series") or {}, saved.get("data_range") or {}
    many = saved.get("training_series") or []
    if len(many) > 1:
        args.series = args.series or ",".join(x["name"] for x in many)
        weights = [x.get("weight") for x in many]
        if args.series_weights is None and None not in weights:
            args.series_weights = ",".join(f"{w:g}" for w in weights)
        asked = saved.get("series_range") or {}  # what --from/--until asked of every series
        for attr, key in (("date_from", "from"), ("date_until", "until")):
            if getattr(args, attr, None) is None:
                setattr(args, attr, asked.get(key))
        return
    if series.get("exchange") == SYNTHETIC:
        if args.synthetic is None:
            args.synthetic = span.get("candles")
        return
    if args.synthetic is not None:
        return  # another source: _check_resumed_data refuses it
    defaults = {
        "exchange": series.get("exchange"),
        "symbol": series.get("symbol"),
        "timeframe": series.get("timeframe"),
        "date_from": span.get("from"),
        "date_until": span.get("until"),
    }
    for attr, value in defaults.items():
        if getattr(args, attr, None) is None:
            setattr(args, attr, value)


def _check_resumed_data(
    args: argparse.Namespace, saved: dict[str, Any], meta: dict[str, Any]
) -> None:
    """Refuse to resume on other candles than the run's (another series, range or length)."""
    was = {**(saved.get("series") or {}), **(saved.get("data_range") or {})}
    now = {**meta["series"], **meta["data_range"]}
    trained = [x.get("name") for x in saved.get("training_series") or []]
    loads = [x["name"] for x in meta.get("training_series") or []]
    if len(trained) > 1 and trained != loads:
        raise UsageError(
            f"--resume {args.resume}: the run was trained on --series {','.join(trained)} but now "
            f"loads {','.join(loads) or 'one series'}; resume without --series, or train anew"
        )
    for key in ("exchange", "symbol", "timeframe", "candles", "from", "until"):
        if key in was and was[key] != now[key]:
            raise UsageError(
                f"--resume {args.resume}: the run was trained on {key} {was[key]} but now loads {now[key]}; resume "
                f"without --exchange/--symbol/--timeframe/--from/--until/--synthetic, or train anew into another --out"
            )


def _train(args: argparse.Namespace) -> int:
    from chartrl.strategies.registry import NEURAL_NAMES, available, is_neural
    from chartrl.train import checkpoint as ckpt
    from chartrl.train.distributed import cleanup, setup
    from chartrl.train.dqn import TrainConfig, train

    if args.resume and args.out and args.out.resolve() != args.resume.resolve():
        raise UsageError(
            "--resume DIR continues in DIR; leave --out out or give the same directory"
        )
    out = args.resume or args.out
    if out is None:
        raise UsageError("give --out DIR for the new model (or --resume DIR)")
    given = given_options(args)
    if args.resume:
        saved = ckpt.read_meta(args.resume)
        if args.strategy and args.strategy != saved["strategy"]:
            raise UsageError(
                f"--strategy {args.strategy} but {args.resume} holds a {saved['strategy']} model; drop --strategy to resume it"
            )
        cfg = _resume_config(args, saved, given)
        _resume_data_args(args, saved)
    elif (out / ckpt.META_FILE).exists():
        raise UsageError(
            f"{out} already holds a model; use --resume {out} to continue it or choose another --out"
        )
    else:
        cfg = TrainConfig(**given)
    s, candles, meta = load_series(args)
    strategy = saved["strategy"] if args.resume else args.strategy or s.model.strategy
    if args.resume:
        _check_resumed_data(args, saved, meta)
    if not is_neural(strategy):
        what = (
            "is a rule baseline with nothing to train" if strategy in available() else "is unknown"
        )
        raise UsageError(f"strategy {strategy!r} {what}; use one of {', '.join(NEURAL_NAMES)}")
    rules = fill_rules(s, meta)
    dist, device = setup(args.device or s.model.device)
    try:
        data = prepare(s, candles, cfg, meta, args.series_weights)
        history = train(
            strategy,
            data,
            cfg,
            out,
            meta,
            device=device,
            dist=dist,
            rules=rules,
            initial_cash=s.trading.initial_cash,
            resume=bool(args.resume),
            progress=not args.no_progress,
        ).history
    finally:
        cleanup(dist)
    if dist.is_main:
        last = history[-1] if history else {}
        val = ", ".join(
            f"{k[4:]} {'n/a' if v in (None, '') else f'{float(v):.4g}'}"
            for k, v in last.items()
            if k.startswith("val_") and "@" not in k  # several series: the pooled figures
        )
        epochs = sum(1 for h in history if h.get("kind", "epoch") == "epoch")
        best = (ckpt.read_meta(out).get("checkpoint") or {}).get("best")
        where = (
            f"; best on validation in {out / best['dir']} ({best['stage']} epoch {best['epoch']}, "
            f"{best['updates']} updates, val Sharpe {best['score']:.4g})"
            if best
            else ""
        )
        print(
            f"model written to {out} ({strategy}, {epochs} epochs, {len(history) - epochs} more "
            f"validations{'; last validation: ' + val if val else ''}{where})"
        )
    return 0
