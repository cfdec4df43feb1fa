"""chartrl train | compare: train a chart policy, or train several and compare their learning."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chartrl.cli.app import add_series_options, date_range, settings
from chartrl.errors import UsageError

STAGES = ("imitation", "dqn")


def _common(p: argparse.ArgumentParser) -> None:
    add_series_options(p)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=10, help="DQN epochs (total, also when resuming; default 10)")
    g.add_argument("--imitation-epochs", type=int, default=3, help="imitation epochs before DQN (default 3)")
    g.add_argument("--stages", default="imitation,dqn", help="comma list of stages to run: imitation, dqn (default both)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto = CUDA when present (default: config model.device)")
    g.add_argument("--validation-fraction", type=float, default=0.15, help="last fraction of candles used for validation (default 0.15)")
    g.add_argument("--oracle-window", type=int, default=24, help="half-window in candles of the oracle labels (default 24)")
    g.add_argument("--num-envs", type=int, default=8, help="history lanes walked at once (default 8)")
    g.add_argument("--learning-starts", type=int, default=2000, help="transitions collected before the first DQN update (default 2000)")
    g.add_argument("--max-steps-per-epoch", type=int, help="cap environment steps / imitation updates per epoch (smoke runs)")
    g.add_argument("--synthetic", type=int, metavar="N", help="train on N synthetic candles instead of the store (demos, smoke runs)")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is often faster on a busy machine)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a chart policy (imitation of the oracle, then Double DQN)")
    p.add_argument("--strategy", help="cnn, cnnrnn, gru or resnet (default: config model.strategy)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--out", type=Path, help="model directory to write (model.pt, model.json, history.csv, tb/)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR (weights, optimizer, counters)")
    _common(p)
    p.set_defaults(func=_train)

    c = sub.add_parser("compare", help="train several policies on the same data and budget; plot and tabulate")
    c.add_argument("--strategies", default="cnn,cnnrnn,gru,resnet", help="comma list of neural strategies")
    c.add_argument("--seeds", type=int, default=3, help="seeds per strategy (default 3)")
    c.add_argument("--out", type=Path, required=True, help="output directory (curves.png, compare.md, compare.json, runs/)")
    _common(c)
    c.set_defaults(func=_compare)


def _config(args: argparse.Namespace, seed: int) -> Any:
    from chartrl.backtest.dqn import TrainConfig

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise UsageError(f"--stages {args.stages!r}: use a comma list of {', '.join(STAGES)}")
    for opt, v in (("--epochs", args.epochs), ("--imitation-epochs", args.imitation_epochs)):
        if v < 0:
            raise UsageError(f"{opt} must be >= 0, got {v}")
    if not 0 <= args.validation_fraction < 0.9:
        raise UsageError(f"--validation-fraction must be in [0, 0.9), got {args.validation_fraction}")
    if args.learning_starts < 0:
        raise UsageError(f"--learning-starts must be >= 0, got {args.learning_starts}")
    if args.num_envs < 1:
        raise UsageError(f"--num-envs must be >= 1, got {args.num_envs}")
    return TrainConfig(
        seed=seed, stages=stages, epochs=args.epochs, imitation_epochs=args.imitation_epochs,
        validation_fraction=args.validation_fraction, oracle_window=args.oracle_window,
        num_envs=args.num_envs, max_steps_per_epoch=args.max_steps_per_epoch, learning_starts=args.learning_starts,
    )


def _load(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """Settings, candles and the checkpoint meta describing them."""
    s = settings(args)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    series = {"exchange": s.exchange.id, "symbol": s.market.symbol, "timeframe": s.market.timeframe}
    if args.synthetic:
        from chartrl.testing.synthetic import synthetic_candles

        if args.synthetic < 100:
            raise UsageError(f"--synthetic {args.synthetic}: use at least a few thousand candles")
        candles = synthetic_candles(args.synthetic, seed=7, timeframe=s.market.timeframe)
        source = f"synthetic({args.synthetic}, seed=7)"
    else:
        from chartrl.market.store import CandleStore

        start, end = date_range(args)
        candles = CandleStore(s.data_dir).load(series["exchange"], series["symbol"], series["timeframe"], start, end)
        source = f"store:{s.data_dir}"
    meta = {
        "chart_spec": s.chart,
        "series": series,
        "data_range": {"from": candles["timestamp"].iloc[0].isoformat(), "until": candles["timestamp"].iloc[-1].isoformat(),
                       "candles": len(candles), "source": source},
    }
    return s, candles, meta


def _rules(s: Any) -> Any:
    from chartrl.account.fills import MarketRules

    fee = s.trading.fee if s.trading.fee is not None else 0.001  # no market info offline: Binance's taker fee
    return MarketRules(fee=fee, slippage_bps=s.trading.slippage_bps, position_fraction=s.trading.position_fraction)


def _prepare(args: argparse.Namespace, s: Any, candles: Any, cfg: Any, meta: dict[str, Any]) -> Any:
    from chartrl.backtest.env import prepare_data

    data = prepare_data(candles, s.chart, s.market.timeframe, cfg.validation_fraction)
    ts = candles["timestamp"]
    meta["data_range"]["validation_from"] = ts.iloc[min(data.validation_start, len(ts) - 1)].isoformat() if len(data.validation) else None
    return data


def _train(args: argparse.Namespace) -> int:
    from chartrl.backtest import checkpoint as ckpt
    from chartrl.backtest.distributed import cleanup, setup
    from chartrl.backtest.dqn import train
    from chartrl.strategies.registry import NEURAL_NAMES, available, is_neural

    if args.resume and args.out and args.out.resolve() != args.resume.resolve():
        raise UsageError("--resume DIR continues in DIR; leave --out out or give the same directory")
    out = args.resume or args.out
    if out is None:
        raise UsageError("give --out DIR for the new model (or --resume DIR)")
    cfg = _config(args, args.seed)
    s, candles, meta = _load(args)
    strategy = args.strategy or s.model.strategy
    if args.resume:
        saved = ckpt.read_meta(args.resume)
        if args.strategy and args.strategy != saved["strategy"]:
            raise UsageError(f"--strategy {args.strategy} but {args.resume} holds a {saved['strategy']} model; drop --strategy to resume it")
        strategy = saved["strategy"]
    elif (out / ckpt.META_FILE).exists():
        raise UsageError(f"{out} already holds a model; use --resume {out} to continue it or choose another --out")
    if not is_neural(strategy):
        what = "is a rule baseline with nothing to train" if strategy in available() else "is unknown"
        raise UsageError(f"strategy {strategy!r} {what}; use one of {', '.join(NEURAL_NAMES)}")
    dist, device = setup(args.device or s.model.device)
    try:
        data = _prepare(args, s, candles, cfg, meta)
        history = train(strategy, data, cfg, out, meta, device=device, dist=dist, rules=_rules(s),
                        initial_cash=s.trading.initial_cash, resume=bool(args.resume), progress=not args.no_progress).history
    finally:
        cleanup(dist)
    if dist.is_main:
        last = history[-1] if history else {}
        val = ", ".join(f"{k[4:]} {float(v):.4g}" for k, v in last.items() if k.startswith("val_"))
        print(f"model written to {out} ({strategy}, {len(history)} epochs{'; validation: ' + val if val else ''})")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from chartrl.backtest.compare import run_compare
    from chartrl.backtest.distributed import pick_device
    from chartrl.strategies.registry import NEURAL_NAMES

    strategies = [x.strip() for x in args.strategies.split(",") if x.strip()]
    bad = [x for x in strategies if x not in NEURAL_NAMES]
    if bad or not strategies:
        raise UsageError(f"--strategies {args.strategies!r}: use a comma list of {', '.join(NEURAL_NAMES)}")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    cfg = _config(args, 1)
    s, candles, meta = _load(args)
    data = _prepare(args, s, candles, cfg, meta)
    table = run_compare(strategies, args.seeds, data, cfg, args.out, meta, device=pick_device(args.device or s.model.device),
                        rules=_rules(s), initial_cash=s.trading.initial_cash, progress=not args.no_progress)
    print(table)
    print(f"written: {args.out / 'curves.png'}, {args.out / 'compare.md'}, {args.out / 'compare.json'}")
    return 0
