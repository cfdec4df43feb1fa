"""``chartrl backtest``: replay stored candles through a model or a rule baseline and write a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from chartrl.cli.app import add_series_options, date_range, settings
from chartrl.errors import CheckpointError, UsageError

RULES = ("buyhold", "sma", "random", "oracle")
NEURAL = ("cnn", "cnnrnn", "gru", "resnet")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backtest",
        help="replay stored candles through a model or baseline; write metrics, plots and a report",
        description="Replay the stored series through a trained model (--model) or a rule baseline (--strategy). "
        "A decision at the close of candle t fills at the open of t+1 with fees and slippage, under the "
        "exchange's amount precision and minimums as the paper account (market info stored by fetch). "
        "Writes metrics.json, decisions.csv, equity.png, trades.png, report.md and report.html into --out.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--model", type=Path, metavar="DIR", help="model directory (model.pt + model.json)"
    )
    what.add_argument(
        "--strategy",
        choices=RULES + NEURAL,
        help="rule baseline (oracle CHEATS: upper bound only); a neural strategy needs --walk-forward K --retrain",
    )
    add_series_options(p)
    p.add_argument(
        "--series",
        metavar="A,B,C",
        help="transfer matrix: replay on each stored series exchange:BASE/QUOTE:timeframe "
        "(comma list); one report per series under --out, plus matrix.md/csv and matrix.png",
    )
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="output directory (created)"
    )
    p.add_argument(
        "--fee",
        type=float,
        metavar="F",
        help="taker fee per side, fraction (default: config trading.fee); overrides the fee only",
    )
    p.add_argument(
        "--slippage-bps",
        type=float,
        metavar="B",
        help="slippage in basis points (default: config trading.slippage_bps)",
    )
    p.add_argument(
        "--initial-cash",
        type=float,
        metavar="X",
        help="starting cash, quote currency (default: config trading.initial_cash)",
    )
    p.add_argument(
        "--position-fraction",
        type=float,
        metavar="P",
        help="fraction of equity a buy invests (default: config)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=1,
        metavar="N",
        help="configurations tried before this one, for the deflated Sharpe ratio (default 1)",
    )
    p.add_argument(
        "--walk-forward",
        type=int,
        metavar="K",
        help="K purged walk-forward folds (train / validation / test by date)",
    )
    p.add_argument(
        "--retrain",
        action="store_true",
        help="with --walk-forward and a neural --strategy: train a fresh model per fold",
    )
    p.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help="--retrain: DQN epochs per fold (default: the trainer's)",
    )
    p.add_argument(
        "--imitation-epochs",
        type=int,
        metavar="N",
        help="--retrain: imitation epochs per fold (default: the trainer's)",
    )
    p.add_argument(
        "--max-steps-per-epoch",
        type=int,
        metavar="N",
        help="--retrain: cap on steps per epoch (quick runs)",
    )
    p.add_argument(
        "--sma",
        default="",
        metavar="FAST,SLOW",
        help="sma periods (default: the chart's first two moving averages)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the random baseline (and of retraining)"
    )
    p.add_argument(
        "--oracle-window",
        type=int,
        default=24,
        metavar="N",
        help="oracle extrema: candles either side of a turning point",
    )
    p.add_argument(
        "--oracle",
        choices=["dp", "extrema"],
        default="dp",
        help="oracle: dp = fee-aware optimal path from the actual position (default), "
        "extrema = the article's window-extrema labeller",
    )
    p.add_argument(
        "--oracle-trade-penalty",
        type=float,
        metavar="P",
        help="oracle dp: penalty per round trip in log-return units (default 0.02, docs/training.md)",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="torch device (default: config model.device)",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads of the chart CNN pass (default: 1 on a CPU)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=handle)


def _check_args(args: argparse.Namespace) -> None:
    if args.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {args.trials}")
    if args.walk_forward is not None and args.walk_forward < 1:
        raise UsageError(f"--walk-forward must be at least 1 fold, got {args.walk_forward}")
    if args.retrain and (args.walk_forward is None or args.strategy not in NEURAL):
        raise UsageError(
            "--retrain needs --walk-forward K and a neural --strategy (cnn, cnnrnn, gru, resnet)"
        )
    if args.strategy in NEURAL and not args.retrain:
        raise UsageError(
            f"--strategy {args.strategy} has no weights to replay; use --model DIR, or --walk-forward K --retrain"
        )
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if args.fee is not None and not 0 <= args.fee < 0.1:
        raise UsageError(f"--fee {args.fee} must be a fraction in [0, 0.1), e.g. 0.001 for 0.1%")
    if args.slippage_bps is not None and not 0 <= args.slippage_bps <= 1000:
        raise UsageError(f"--slippage-bps {args.slippage_bps} must be between 0 and 1000")
    if args.initial_cash is not None and args.initial_cash <= 0:
        raise UsageError(f"--initial-cash {args.initial_cash} must be positive")
    if args.position_fraction is not None and not 0 < args.position_fraction <= 1:
        raise UsageError(f"--position-fraction {args.position_fraction} must be in (0, 1]")


def _sma_periods(args: argparse.Namespace, spec: Any) -> tuple[int, int]:
    if not args.sma:
        periods = sorted(spec.ma_periods)
        if len(periods) < 2:
            raise UsageError("the chart has fewer than two moving averages; pass --sma FAST,SLOW")
        return periods[0], periods[-1]
    try:
        fast, slow = (int(x) for x in args.sma.split(","))
    except ValueError:
        raise UsageError(f"--sma {args.sma!r} must be two integers FAST,SLOW, e.g. 5,20") from None
    if not 1 <= fast < slow:
        raise UsageError(f"--sma {args.sma}: need 1 <= FAST < SLOW")
    return fast, slow


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available; use --device cpu")
    return name


def _load_candles(s: Any, start: Any, end: Any) -> Any:
    """The stored series from a chart window (plus indicator warm-up) before ``start`` to ``end``."""
    import pandas as pd

    from chartrl.market.candles import to_ms
    from chartrl.market.store import CandleStore
    from chartrl.timeframe import shift_open_ms

    warm = None
    if start is not None:
        lookback = (
            s.chart.window + 2 * max((*s.chart.ma_periods, s.chart.bollinger_period or 0, 34)) + 10
        )
        warm = pd.Timestamp(
            shift_open_ms(int(to_ms(start)), s.market.timeframe, -lookback), unit="ms", tz="UTC"
        )
    return CandleStore(s.data_dir).load(
        s.exchange.id, s.market.symbol, s.market.timeframe, warm, end
    )


def _penalty(args: argparse.Namespace) -> dict[str, float]:
    pen = args.oracle_trade_penalty
    if pen is None:
        return {}
    if not pen >= 0:
        raise UsageError(f"--oracle-trade-penalty must be >= 0 (log-return units), got {pen}")
    return {"oracle_trade_penalty": pen}


def _settings(args: argparse.Namespace) -> Any:
    trading: dict[str, Any] = {}
    for key, attr in (
        ("fee", "fee"),
        ("slippage_bps", "slippage_bps"),
        ("initial_cash", "initial_cash"),
        ("position_fraction", "position_fraction"),
    ):
        if getattr(args, attr) is not None:
            trading[key] = getattr(args, attr)
    return settings(args, **({"trading": trading} if trading else {}))


def handle(args: argparse.Namespace) -> int:
    _check_args(args)
    if args.series:
        from chartrl.cli.matrix_cmd import transfer_matrix

        return transfer_matrix(args, _settings, _backtest)
    metrics = _backtest(args, _settings(args), args.out)
    _print_summary(metrics, args.out)
    return 0


def _backtest(args: argparse.Namespace, s: Any, out: Path, curves: list | None = None) -> dict:
    """One backtest of the configured series into ``out``; its metrics (``curves``: see
    ``run_and_report``)."""
    from chartrl.backtest.provenance import quote_of

    start, end = date_range(args)
    device = _device(args.device or s.model.device)
    from chartrl.market.markets import fill_parameters, market_rules

    rules, market_info = market_rules(s)
    spec = s.chart

    from chartrl.logs import get_logger

    log = get_logger("chartrl.cli.backtest")
    meta: dict[str, Any] = {}
    if args.model is not None:
        policy, meta = _load_model(args.model, device, s)
        strategy: Any = policy
        name = meta.get("strategy", getattr(policy, "name", "model"))
    elif args.strategy in RULES:
        from chartrl.strategies.rules import make_rule

        strategy = make_rule(
            args.strategy,
            sma=_sma_periods(args, spec),
            seed=args.seed,
            oracle_window=args.oracle_window,
            oracle=args.oracle,
            rules=rules,
            **_penalty(args),
        )
        name = args.strategy
    else:
        strategy, name = None, args.strategy
    candles = _load_candles(s, start, end)
    series = (s.exchange.id, s.market.symbol, s.market.timeframe)
    quote = quote_of(series)
    params = {
        "strategy": name + (" (CHEATING: reads future candles)" if name == "oracle" else ""),
        "model": str(args.model) if args.model else "",
        "series": f"{s.exchange.id} {s.market.symbol} {s.market.timeframe}",
        "quote_currency": quote,
        "from": start.isoformat() if start else "first stored candle",
        "until": end.isoformat() if end else "last stored candle",
        **fill_parameters(rules, market_info),
        f"initial_cash ({quote})": s.trading.initial_cash,
        "chart": spec.model_dump_json(),
        "trials": args.trials,
        "device": device,
        **(
            {"walk_forward_folds": args.walk_forward, "retrain": args.retrain}
            if args.walk_forward
            else {}
        ),
        **{
            f"rule.{k}": v
            for k, v in (strategy.params().items() if hasattr(strategy, "params") else [])
        },
    }
    progress = not args.no_progress and sys.stderr.isatty()
    from chartrl.backtest.report import run_and_report

    metrics = run_and_report(
        strategy,
        candles,
        spec,
        rules,
        start,
        end,
        out,
        params,
        timeframe=s.market.timeframe,
        initial_cash=s.trading.initial_cash,
        trials=args.trials,
        device=device,
        progress=progress,
        walk_forward=args.walk_forward,
        retrain=_retrainer(args, s, rules, device, progress) if args.retrain else None,
        model_meta=meta,
        threads=args.threads,
        series=series,
        curves=curves,
    )
    log.info("backtest_written", out=str(out), strategy=name, total_return=metrics["total_return"])
    return metrics


def _load_model(path: Path, device: str, s: Any) -> tuple[Any, dict]:
    try:
        from chartrl.train.checkpoint import load_model
    except ImportError as exc:
        raise CheckpointError(
            f"model loading is unavailable in this build ({exc}); use --strategy"
        ) from None
    # Another series of the same timeframe is a transfer, labelled as such in the report.
    return load_model(
        path,
        device,
        expect_spec=s.chart,
        expect_series=(s.exchange.id, s.market.symbol, s.market.timeframe),
        allow_transfer=True,
    )


def _retrainer(args: argparse.Namespace, s: Any, rules: Any, device: str, progress: bool) -> Any:
    from chartrl.backtest.walkforward import make_retrainer

    overrides: dict[str, Any] = {"seed": args.seed}
    for key in ("epochs", "imitation_epochs", "max_steps_per_epoch"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    series = {"exchange": s.exchange.id, "symbol": s.market.symbol, "timeframe": s.market.timeframe}
    return make_retrainer(
        args.strategy,
        s.chart,
        s.market.timeframe,
        series,
        rules,
        args.out / "models",
        train_overrides=overrides,
        initial_cash=s.trading.initial_cash,
        device=device,
        progress=progress,
    )


def _print_summary(m: dict, out: Path) -> None:
    from chartrl.backtest.report import fmt

    b = m["baselines"]["buyhold"]
    flag = "  [CHEATING: upper bound only]" if m.get("cheating") else ""
    if m.get("series_in_training") is False:
        learnt = ", ".join(t["name"] for t in m.get("training_series") or [])
        flag += f"  [TRANSFER: trained on {learnt}]"
    print(f"{m['strategy']}{flag}: {m['start'][:16]} .. {m['end'][:16]}, {m['candles']:,} candles")
    for key, label, kind in (
        ("total_return", "return", "pct"),
        ("sharpe", "Sharpe", "f2"),
        ("max_drawdown", "max drawdown", "pct"),
        ("trades", "trades", "int"),
    ):
        print(
            f"  {label:<13} {fmt(m.get(key), kind):>12}   buy and hold {fmt(b.get(key), kind):>12}"
        )
    dsr = (m.get("deflated_sharpe") or {}).get("dsr")
    if dsr is not None:
        print(f"  deflated Sharpe ratio ({m['deflated_sharpe']['trials']} trials): {dsr:.3f}")
    print(f"report: {out / 'report.md'}")
