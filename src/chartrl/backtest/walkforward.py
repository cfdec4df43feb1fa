"""Out-of-sample evaluation: one period (``evaluate``, which the nightly retrain also calls) and
K purged walk-forward folds.

Fold layout over n candles, K folds, chart window w (gap = w candles), L = (n - 2w) // (K + 3):

    fold i:  train [0 .. )  | gap w | validation L | gap w | test L
             (anchored: training always starts at the first candle and grows by L per fold)

The test periods are consecutive and end at the last candle, so together they form one
out-of-sample stretch. The gaps purge the folds: the chart window of the first test candle (and of
the first validation candle) lies entirely after the data the model was trained on, and the
oracle's look-ahead labels at the end of the training data stay inside the gap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from chartrl.account.fills import MarketRules
from chartrl.backtest.metrics import result_metrics
from chartrl.backtest.runner import BacktestResult, run_backtest, run_baseline
from chartrl.chart.spec import ChartSpec
from chartrl.errors import DataError
from chartrl.logs import get_logger

log = get_logger("chartrl.backtest.walkforward")


def infer_periods_per_year(candles: pd.DataFrame) -> float:
    """Candles per year from the series' typical spacing (365-day years, as crypto trades; calendar
    months, 28 to 31 days apart, twelve a year as ``periods_per_year`` counts them)."""
    if len(candles) < 2:
        raise DataError("need at least two candles to tell the timeframe")
    step = pd.Series(candles["timestamp"]).diff().dropna().median().total_seconds()
    days = step / 86400.0
    if days >= 28:
        return 12.0 / max(round(days / (365.25 / 12)), 1)
    return 365.0 * 86400.0 / step


def evaluate_runs(
    policy_or_strategy: Any,
    candles: pd.DataFrame,
    spec: ChartSpec,
    rules: MarketRules,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    *,
    initial_cash: float = 10_000.0,
    periods_per_year: float | None = None,
    trials: int | None = None,
    device: Any = "cpu",
    progress: bool = False,
    threads: int | None = None,
) -> tuple[dict, BacktestResult, BacktestResult]:
    """``evaluate`` plus the strategy's and buy-and-hold's runs (for reports)."""
    ppy = periods_per_year or infer_periods_per_year(candles)
    result = run_backtest(
        policy_or_strategy,
        candles,
        spec,
        rules,
        start,
        end,
        initial_cash=initial_cash,
        device=device,
        progress=progress,
        threads=threads,
    )
    baseline = run_baseline(result, candles, spec, rules, initial_cash)
    metrics = {
        "strategy": result.strategy,
        "cheating": result.cheating,
        **result_metrics(result, ppy, trials),
    }
    metrics["baselines"] = {"buyhold": result_metrics(baseline, ppy)}
    return metrics, result, baseline


def evaluate(
    policy_or_strategy: Any,
    candles: pd.DataFrame,
    spec: ChartSpec,
    rules: MarketRules,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    **kwargs: Any,
) -> dict:
    """Metrics of a policy (neural Policy or RuleStrategy) deciding from ``start`` to ``end``.

    ``candles`` may (and should) reach back a chart window before ``start``: those candles are the
    first charts' history, not traded. The dict has every metric of ``compute_metrics``, the
    strategy's name and cheating flag, and ``baselines.buyhold`` over the same candles. Keyword
    options: initial_cash, periods_per_year (default: from the candle spacing), trials, device,
    threads (torch threads of the CNN pass; default 1 on a CPU).
    """
    return evaluate_runs(policy_or_strategy, candles, spec, rules, start, end, **kwargs)[0]


@dataclass(frozen=True)
class Fold:
    """Inclusive candle index ranges of one walk-forward fold."""

    index: int
    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]

    def dates(self, candles: pd.DataFrame) -> dict[str, tuple[str, str]]:
        ts = candles["timestamp"]
        return {
            k: (ts.iloc[a].isoformat(), ts.iloc[b].isoformat())
            for k, (a, b) in (("train", self.train), ("val", self.val), ("test", self.test))
        }


def make_folds(n: int, k: int, window: int) -> list[Fold]:
    """K anchored, purged folds over ``n`` candles (see the module docstring for the layout)."""
    if k < 1:
        raise DataError(f"--walk-forward needs at least 1 fold, got {k}")
    gap = window
    length = (n - 2 * gap) // (k + 3)
    if length < window + 3:
        need = 2 * gap + (k + 3) * (window + 3)
        raise DataError(
            f"{n} candles are too few for {k} walk-forward folds with a {window}-candle chart (need about {need}); "
            "use fewer folds, a longer --from/--until range or a smaller chart.window"
        )
    folds = []
    for i in range(k):
        t0 = n - (k - i) * length
        v0 = t0 - gap - length
        folds.append(Fold(i, (0, v0 - gap - 1), (v0, v0 + length - 1), (t0, t0 + length - 1)))
    return folds


Retrainer = Callable[[pd.DataFrame, Fold], Any]
"""(candles up to the fold's validation end, fold) -> a fresh policy trained on fold.train and
selected on fold.val (indices into those candles)."""


@dataclass
class WalkForwardResult:
    folds: list[dict]
    results: list[BacktestResult]
    baselines: list[BacktestResult]


def walk_forward(
    policy_or_strategy: Any,
    candles: pd.DataFrame,
    spec: ChartSpec,
    rules: MarketRules,
    k: int,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    retrain: Retrainer | None = None,
    initial_cash: float = 10_000.0,
    periods_per_year: float | None = None,
    device: Any = "cpu",
    progress: bool = False,
    threads: int | None = None,
) -> WalkForwardResult:
    """Evaluate each fold's test period; with ``retrain`` a fresh policy is trained per fold first,
    otherwise ``policy_or_strategy`` (a rule or a fixed model) is used for every fold.

    The folds lie over the candles from ``start`` to ``end`` (``--from``/``--until``); candles
    before ``start`` only serve as chart warm-up, never as training data, as in ``chartrl train``.
    Fold indices (and the Retrainer's candles) count from the first candle at or after ``start``.
    """
    candles = candles.reset_index(drop=True)
    ppy = periods_per_year or infer_periods_per_year(candles)
    folds, results, baselines = [], [], []
    lo = 0 if start is None else int(candles["timestamp"].searchsorted(pd.Timestamp(start)))
    hi = (
        len(candles)
        if end is None
        else int(candles["timestamp"].searchsorted(pd.Timestamp(end), side="right"))
    )
    inner = candles.iloc[lo:hi].reset_index(drop=True)
    ts = inner["timestamp"]
    for fold in make_folds(len(inner), k, spec.window):
        policy = policy_or_strategy
        if retrain is not None:
            policy = retrain(inner.iloc[: fold.val[1] + 1].reset_index(drop=True), fold)
        # The test run sees candles up to the test end only; its warm-up reaches into the gap.
        visible = candles.iloc[: lo + fold.test[1] + 1]
        metrics, result, baseline = evaluate_runs(
            policy,
            visible,
            spec,
            rules,
            ts.iloc[fold.test[0]],
            ts.iloc[fold.test[1]],
            initial_cash=initial_cash,
            periods_per_year=ppy,
            device=device,
            progress=progress,
            threads=threads,
        )
        dates = fold.dates(inner)
        folds.append(
            {
                "fold": fold.index,
                **dates,
                "metrics": {k_: v for k_, v in metrics.items() if k_ != "baselines"},
                "baseline": metrics["baselines"]["buyhold"],
            }
        )
        results.append(result)
        baselines.append(baseline)
        log.info(
            "walkforward_fold",
            fold=fold.index,
            test=dates["test"],
            total_return=metrics["total_return"],
            buyhold=metrics["baselines"]["buyhold"]["total_return"],
        )
    return WalkForwardResult(folds, results, baselines)


def fold_boundaries(results: list[BacktestResult]) -> list[pd.Timestamp]:
    """Start of every fold after the first (dotted lines on the combined equity picture)."""
    return [r.start for r in results[1:]]


def make_retrainer(
    strategy: str,
    spec: ChartSpec,
    timeframe: str,
    series: dict[str, str],
    rules: MarketRules,
    out_root: Any,
    *,
    train_overrides: dict[str, Any] | None = None,
    initial_cash: float = 10_000.0,
    device: Any = "cpu",
    progress: bool = False,
) -> Retrainer:
    """A Retrainer that trains a fresh ``strategy`` per fold with the DQN trainer
    (:func:`chartrl.train.dqn.train`), validating on the fold's validation part, and saves each
    fold's model under ``out_root/fold_<i>``."""
    from pathlib import Path

    def retrain(visible: pd.DataFrame, fold: Fold) -> Any:
        from chartrl.train import checkpoint as ckpt
        from chartrl.train.dqn import TrainConfig, train
        from chartrl.train.env import prepare_data

        n = len(visible)
        # prepare_data purges one chart window after its validation start itself, so it starts
        # validation right after our training part: its first validation chart is our fold.val[0].
        frac = 1.0 - (fold.train[1] + 1) / n
        cfg = TrainConfig(validation_fraction=frac, **(train_overrides or {}))
        data = prepare_data(visible, spec, timeframe, frac)
        ts = visible["timestamp"]
        meta = {
            "chart_spec": spec,
            "series": series,
            "data_range": {
                "from": ts.iloc[0].isoformat(),
                "until": ts.iloc[-1].isoformat(),
                "candles": n,
                "validation_from": ts.iloc[min(data.validation_start, n - 1)].isoformat(),
                "source": f"walk-forward fold {fold.index}",
            },
        }
        out = Path(out_root) / f"fold_{fold.index}"
        log.info(
            "walkforward_retrain",
            fold=fold.index,
            strategy=strategy,
            train_until=ts.iloc[fold.train[1]].isoformat(),
            out=str(out),
        )
        train(
            strategy,
            data,
            cfg,
            out,
            meta,
            device=device,
            rules=rules,
            initial_cash=initial_cash,
            progress=progress,
        )
        policy, _ = ckpt.load_model(out, device, expect_spec=spec)
        return policy

    return retrain
