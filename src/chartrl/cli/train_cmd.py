"""chartrl train | compare: train a chart policy, or train several and compare their learning."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chartrl.cli.app import add_series_options, date_range, settings
from chartrl.errors import UsageError

STAGES = ("imitation", "dqn")
# strategies.base.NORMS, spelt out so that parsing the command line does not import torch
NORMS = ("batch", "group", "layer", "none")
SYNTHETIC = "synthetic"
"""The exchange of a --synthetic run's series: no stored series is called that, so a backtest or
the daemon refuses such a model where it expects real candles."""

# Training options -> TrainConfig fields, with the rule a given value must follow. Options default
# to None ("not given"): TrainConfig holds the defaults, and --resume can tell what was given.
_OPTIONS: dict[str, tuple[str, Any, str]] = {
    "seed": ("--seed", lambda v: v >= 0, ">= 0"),
    "epochs": ("--epochs", lambda v: v >= 0, ">= 0"),
    "imitation_epochs": ("--imitation-epochs", lambda v: v >= 0, ">= 0"),
    "validation_fraction": ("--validation-fraction", lambda v: 0 <= v < 0.9, "in [0, 0.9)"),
    "oracle_window": ("--oracle-window", lambda v: v >= 1, ">= 1"),
    "oracle": ("--oracle", lambda v: v in ("dp", "extrema"), "dp or extrema"),
    "oracle_trade_penalty": (
        "--oracle-trade-penalty",
        lambda v: 0 <= v < 1,
        "in [0, 1) (log-return units per round trip)",
    ),
    "imitation_target": (
        "--imitation-target",
        lambda v: v in ("labels", "values"),
        "labels or values",
    ),
    "imitation_weights": (
        "--imitation-weights",
        lambda v: v in ("none", "inverse"),
        "none or inverse",
    ),
    "num_envs": ("--num-envs", lambda v: v >= 1, ">= 1"),
    "learning_starts": ("--learning-starts", lambda v: v >= 0, ">= 0"),
    "max_steps_per_epoch": ("--max-steps-per-epoch", lambda v: v >= 1, ">= 1"),
    "eval_every": ("--eval-every", lambda v: v >= 1, ">= 1"),
    "eps_decay": ("--eps-decay", lambda v: v > 0, "> 0"),
    "norm": ("--norm", lambda v: v in NORMS, "one of batch, group, layer, none"),
    "dueling": ("--dueling", lambda v: isinstance(v, bool), "a flag"),
    "n_step": ("--n-step", lambda v: 1 <= v <= 64, "in [1, 64]"),
    "frame_stack": ("--frame-stack", lambda v: 1 <= v <= 16, "in [1, 16]"),
}
# What a resumed run may change: how far it goes and which stages it runs.
_RESUMABLE = ("epochs", "imitation_epochs", "stages")


def _common(p: argparse.ArgumentParser) -> None:
    add_series_options(p)
    g = p.add_argument_group("training")
    g.add_argument(
        "--series",
        metavar="A,B",
        help="train on several stored series at once, exchange:BASE/QUOTE:timeframe comma list "
        "(e.g. binance:BTC/USDT:1h,binance:ETC/BTC:1h; all of the model's timeframe)",
    )
    g.add_argument(
        "--series-weights",
        metavar="W,W",
        help="--series: each series' share of the lanes and imitation samples (default: by size)",
    )
    g.add_argument("--epochs", type=int, help="DQN epochs (total, also when resuming; default 10)")
    g.add_argument("--imitation-epochs", type=int, help="imitation epochs before DQN (default 3)")
    g.add_argument("--stages", help="comma list of stages to run: imitation, dqn (default both)")
    g.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="auto = CUDA when present (default: config model.device)",
    )
    g.add_argument(
        "--validation-fraction",
        type=float,
        help="last fraction of candles used for validation (default 0.15)",
    )
    g.add_argument(
        "--oracle-window",
        type=int,
        help="--oracle extrema: half-window in candles of the labels (default 24)",
    )
    g.add_argument(
        "--oracle",
        help="imitation targets: dp = fee-aware optimal action from the position held (default), "
        "extrema = the article's window-extrema labels",
    )
    g.add_argument(
        "--oracle-trade-penalty",
        type=float,
        metavar="P",
        help="dp oracle's penalty per round trip, log-return units (default 0.02: ~4 a week on BTC)",
    )
    g.add_argument(
        "--imitation-target",
        help="labels = cross-entropy on the oracle's action (default); "
        "values = regress Q to the dp oracle's action values x reward_scale",
    )
    g.add_argument(
        "--imitation-weights",
        help="cross-entropy class weights: none (default) or inverse frequency (the old imitation)",
    )
    g.add_argument("--num-envs", type=int, help="history lanes walked at once (default 8)")
    g.add_argument(
        "--learning-starts",
        type=int,
        help="transitions this run's replay must hold before the first DQN update (default 2000)",
    )
    g.add_argument(
        "--eps-decay",
        type=float,
        metavar="N",
        help="epsilon's exponential decay constant in transitions after --learning-starts "
        "(default: a fifth of the planned DQN transitions, see docs/training.md)",
    )
    g.add_argument(
        "--norm",
        help="conv normalisation: group (default), layer, none, or batch (BatchNorm: batch "
        "statistics to learn, running ones to act; see docs/training.md)",
    )
    g.add_argument(
        "--dueling", action="store_true", default=None, help="dueling Q head (V + A - mean A)"
    )
    g.add_argument(
        "--n-step",
        type=int,
        metavar="N",
        help="n-step returns: rewards summed over N steps before bootstrapping (default 1)",
    )
    g.add_argument(
        "--frame-stack",
        type=int,
        metavar="K",
        help="cnn only: stack the charts of the last K candles as channels (default 1)",
    )
    g.add_argument(
        "--max-steps-per-epoch",
        type=int,
        help="cap environment steps / imitation updates per epoch (smoke runs)",
    )
    g.add_argument(
        "--eval-every",
        type=int,
        metavar="N",
        help="DQN gradient updates between two validation runs (history.csv rows, best/ checkpoint; "
        "default: a tenth of the planned updates, so at least 10 per run)",
    )
    g.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help="train on N synthetic candles instead of the store (demos, smoke runs; series 'synthetic')",
    )
    g.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's; 1 is often faster on a busy machine)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


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
    _common(p)
    p.set_defaults(func=_train)

    c = sub.add_parser(
        "compare", help="train several policies on the same data and budget; plot and tabulate"
    )
    c.add_argument(
        "--strategies", default="cnn,cnnrnn,gru,resnet", help="comma list of neural strategies"
    )
    c.add_argument("--seeds", type=int, default=3, help="seeds per strategy (default 3)")
    c.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output directory (curves.png, compare.md, compare.json, runs/)",
    )
    _common(c)
    c.set_defaults(func=_compare)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The training options given on the command line, as TrainConfig fields, each checked."""
    given: dict[str, Any] = {}
    if args.stages is not None:
        stages = tuple(x.strip() for x in args.stages.split(",") if x.strip())
        if not stages or any(x not in STAGES for x in stages):
            raise UsageError(f"--stages {args.stages!r}: use a comma list of {', '.join(STAGES)}")
        given["stages"] = stages
    if args.synthetic is not None and args.synthetic < 100:
        raise UsageError(f"--synthetic {args.synthetic}: use at least a few thousand candles")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    for name, (opt, ok, rule) in _OPTIONS.items():
        value = getattr(args, name, None)
        if value is not None:
            if not ok(value):
                raise UsageError(f"{opt} must be {rule}, got {value}")
            given[name] = value
    if given.get("imitation_target") == "values" and given.get("oracle") == "extrema":
        raise UsageError(
            "--imitation-target values needs the dp oracle's action values; drop --oracle extrema"
        )
    return given


def _resume_config(args: argparse.Namespace, saved: dict[str, Any], given: dict[str, Any]) -> Any:
    """The saved run's hyperparameters; an explicitly given option may only extend it."""
    from dataclasses import replace

    from chartrl.train.dqn import train_config

    base = train_config(saved.get("hyperparameters") or {})
    for name, value in given.items():
        if name not in _RESUMABLE and value != getattr(base, name):
            opt = _OPTIONS[name][0]
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


def _load(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """Settings, candles (or --series: a list of (name, candles, rules)) and the checkpoint meta."""
    s = settings(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    explicit = args.synthetic or args.exchange or args.symbol  # one series asked for
    if args.series is None and s.model.train_series and not explicit:  # config's --series
        args.series = ",".join(s.model.train_series)
        if args.series_weights is None and s.model.train_series_weights:
            args.series_weights = ",".join(f"{w:g}" for w in s.model.train_series_weights)
    if args.series:
        return _load_series(args, s)
    if args.series_weights:
        raise UsageError("--series-weights needs --series")
    if args.synthetic:
        from chartrl.testing.synthetic import synthetic_candles

        if args.date_from or args.date_until:
            raise UsageError(
                "--from/--until select stored candles; --synthetic makes its own, so give one or the other"
            )
        series = {"exchange": SYNTHETIC, "symbol": s.market.symbol, "timeframe": s.market.timeframe}
        candles = synthetic_candles(args.synthetic, seed=7, timeframe=s.market.timeframe)
        source = f"synthetic({args.synthetic}, seed=7)"
    else:
        from chartrl.market.store import CandleStore

        series = {
            "exchange": s.exchange.id,
            "symbol": s.market.symbol,
            "timeframe": s.market.timeframe,
        }
        start, end = date_range(args)
        candles = CandleStore(s.data_dir).load(
            series["exchange"], series["symbol"], series["timeframe"], start, end
        )
        source = f"store:{s.data_dir}"
    meta = {
        "chart_spec": s.chart,
        "series": series,
        "data_range": {
            "from": candles["timestamp"].iloc[0].isoformat(),
            "until": candles["timestamp"].iloc[-1].isoformat(),
            "candles": len(candles),
            "source": source,
        },
    }
    return s, candles, meta


def _load_series(args: argparse.Namespace, s: Any) -> tuple[Any, Any, dict[str, Any]]:
    from chartrl.train.sources import load_series, series_meta

    if args.synthetic or args.exchange or args.symbol:
        raise UsageError("--series names every series; drop --exchange/--symbol/--synthetic")
    start, end = date_range(args)

    def settings_for(exchange: str, symbol: str, timeframe: str) -> Any:
        exchange_, symbol_, tf_ = args.exchange, args.symbol, args.timeframe
        args.exchange, args.symbol, args.timeframe = exchange, symbol, timeframe
        try:
            return settings(args)
        finally:
            args.exchange, args.symbol, args.timeframe = exchange_, symbol_, tf_

    series, rules, infos, tf = load_series(
        args.series, args.series_weights, args.timeframe, settings_for, start, end
    )
    s = settings_for(infos[0]["exchange"], infos[0]["symbol"], tf)
    meta = series_meta(
        s.chart, f"store:{s.data_dir}", series, infos, args.date_from, args.date_until
    )
    return s, [(name, c, r) for (name, c), r in zip(series, rules, strict=True)], meta


def _rules(s: Any, meta: dict[str, Any]) -> Any:
    """The fills the model will get, as `chartrl backtest` and the daemon build them (the market's
    precision and minimums), recorded in ``meta`` (model.json ``fills``): a model trained and
    validated under other fills than it trades under learns the wrong costs. Synthetic candles have
    no market: the config's fee and slippage only, and model.json says so."""
    from chartrl.account.fills import rules_from_settings
    from chartrl.market.markets import SYNTHETIC_SOURCE, fill_parameters, market_rules

    if meta["series"]["exchange"] == SYNTHETIC:
        rules, source = rules_from_settings(s.trading), SYNTHETIC_SOURCE
    else:
        rules, source = market_rules(s)
    meta["fills"] = fill_parameters(rules, source)
    return rules


def _prepare(args: argparse.Namespace, s: Any, candles: Any, cfg: Any, meta: dict[str, Any]) -> Any:
    from chartrl.train.checkpoint import training_series
    from chartrl.train.env import prepare_data

    if isinstance(candles, list):  # --series
        from chartrl.train.sources import prepare_many

        return prepare_many(candles, s.chart, s.market.timeframe, cfg, args.series_weights, meta)
    data = prepare_data(candles, s.chart, s.market.timeframe, cfg.validation_fraction)
    ts = candles["timestamp"]
    meta["data_range"]["validation_from"] = (
        ts.iloc[min(data.validation_start, len(ts) - 1)].isoformat()
        if len(data.validation)
        else None
    )
    meta["training_series"] = training_series(meta)
    return data


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
    given = _given(args)
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
    s, candles, meta = _load(args)
    strategy = saved["strategy"] if args.resume else args.strategy or s.model.strategy
    if args.resume:
        _check_resumed_data(args, saved, meta)
    if not is_neural(strategy):
        what = (
            "is a rule baseline with nothing to train" if strategy in available() else "is unknown"
        )
        raise UsageError(f"strategy {strategy!r} {what}; use one of {', '.join(NEURAL_NAMES)}")
    rules = _rules(s, meta)
    dist, device = setup(args.device or s.model.device)
    try:
        data = _prepare(args, s, candles, cfg, meta)
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


def _compare(args: argparse.Namespace) -> int:
    from chartrl.strategies.registry import NEURAL_NAMES
    from chartrl.train.compare import run_compare
    from chartrl.train.distributed import pick_device
    from chartrl.train.dqn import TrainConfig

    strategies = [x.strip() for x in args.strategies.split(",") if x.strip()]
    bad = [x for x in strategies if x not in NEURAL_NAMES]
    if bad or not strategies:
        raise UsageError(
            f"--strategies {args.strategies!r}: use a comma list of {', '.join(NEURAL_NAMES)}"
        )
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    cfg = TrainConfig(**_given(args))
    s, candles, meta = _load(args)
    rules = _rules(s, meta)
    data = _prepare(args, s, candles, cfg, meta)
    table = run_compare(
        strategies,
        args.seeds,
        data,
        cfg,
        args.out,
        meta,
        device=pick_device(args.device or s.model.device),
        rules=rules,
        initial_cash=s.trading.initial_cash,
        progress=not args.no_progress,
    )
    print(table)
    print(
        f"written: {args.out / 'curves.png'}, {args.out / 'compare.md'}, {args.out / 'compare.json'}"
    )
    return 0
