"""The training options `train`, `compare` and `sweep` share: their parser group, their checks
(as TrainConfig fields), loading the candles they train on and the fills they train under."""

from __future__ import annotations

import argparse
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
OPTIONS: dict[str, tuple[str, Any, str]] = {
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
    "trade_penalty": (
        "--trade-penalty",
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


def add_training_options(p: argparse.ArgumentParser) -> None:
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
        "--trade-penalty",
        type=float,
        metavar="P",
        help="taken from the DQN reward of each entry, log-return units (default 0.02, "
        "as the dp oracle; 0 = the raw net return)",
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


def given_options(args: argparse.Namespace) -> dict[str, Any]:
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
    for name, (opt, ok, rule) in OPTIONS.items():
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


def load_series(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
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
        return _load_many(args)
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


def _load_many(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    from chartrl.train.sources import load_series as load_many
    from chartrl.train.sources import series_meta

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

    series, rules, infos, tf = load_many(
        args.series, args.series_weights, args.timeframe, settings_for, start, end
    )
    s = settings_for(infos[0]["exchange"], infos[0]["symbol"], tf)
    meta = series_meta(
        s.chart, f"store:{s.data_dir}", series, infos, args.date_from, args.date_until
    )
    return s, [(name, c, r) for (name, c), r in zip(series, rules, strict=True)], meta


def fill_rules(s: Any, meta: dict[str, Any]) -> Any:
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


def prepare(
    s: Any, candles: Any, cfg: Any, meta: dict[str, Any], weights: str | None = None
) -> Any:
    from chartrl.train.checkpoint import training_series
    from chartrl.train.env import prepare_data

    if isinstance(candles, list):  # --series
        from chartrl.train.sources import prepare_many

        return prepare_many(candles, s.chart, s.market.timeframe, cfg, weights, meta)
    data = prepare_data(candles, s.chart, s.market.timeframe, cfg.validation_fraction)
    ts = candles["timestamp"]
    meta["data_range"]["validation_from"] = (
        ts.iloc[min(data.validation_start, len(ts) - 1)].isoformat()
        if len(data.validation)
        else None
    )
    meta["training_series"] = training_series(meta)
    return data
