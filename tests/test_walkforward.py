"""Walk-forward folds: layout and purging, per-fold and combined out-of-sample metrics, retraining
without leaks, and evaluate() as the nightly retrain calls it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chartrl.account.fills import MarketRules
from chartrl.backtest.metrics import period_returns, result_metrics, round_trips
from chartrl.backtest.report import chain_results
from chartrl.backtest.walkforward import Fold, evaluate, make_folds, walk_forward
from chartrl.chart.spec import ChartSpec
from chartrl.errors import DataError
from chartrl.strategies.base import Action
from chartrl.strategies.rules import BuyHold, RuleStrategy, SMACrossover
from chartrl.testing.synthetic import synthetic_candles
from chartrl.timeframe import periods_per_year

SPEC = ChartSpec(window=30, height=32, width=32, ma_periods=(5, 20), bollinger_period=20)
RULES = MarketRules(fee=0.001, slippage_bps=5)


@pytest.mark.parametrize(("n", "k", "w"), [(1000, 3, 30), (3000, 5, 250), (777, 1, 20)])
def test_folds_are_purged_consecutive_and_end_at_the_last_candle(n: int, k: int, w: int) -> None:
    folds = make_folds(n, k, w)
    assert len(folds) == k
    assert folds[-1].test[1] == n - 1
    for a, b in zip(folds, folds[1:], strict=False):
        assert b.test[0] == a.test[1] + 1  # one out-of-sample stretch
        assert b.train[1] > a.train[1] and b.train[0] == 0  # anchored, growing
    for f in folds:
        lengths = {f.val[1] - f.val[0], f.test[1] - f.test[0]}
        assert len(lengths) == 1
        # Purge: the chart window of the first validation / test candle holds no earlier part's candle.
        assert f.val[0] - w + 1 > f.train[1]
        assert f.test[0] - w + 1 > f.val[1]
        assert f.train[1] - f.train[0] + 1 >= 2 * (f.test[1] - f.test[0] + 1)


def test_too_few_candles_for_the_folds_is_a_clear_error() -> None:
    with pytest.raises(
        DataError, match="too few for 10 walk-forward folds with a 250-candle chart"
    ):
        make_folds(3000, 10, 250)


def test_walk_forward_rules_per_fold_and_combined() -> None:
    candles = synthetic_candles(1200, seed=8)
    run = walk_forward(
        SMACrossover(5, 20), candles, SPEC, RULES, 3, periods_per_year=periods_per_year("1h")
    )
    assert [f["fold"] for f in run.folds] == [0, 1, 2]
    for f, r in zip(run.folds, run.results, strict=True):
        assert f["metrics"]["start"] == f["test"][0] and f["metrics"]["end"] == f["test"][1]
        assert r.start == pd.Timestamp(f["test"][0])
    combined = chain_results(run.results)
    growth = np.prod([r.equity[-1] / r.equity[0] for r in run.results])
    assert combined.equity[-1] / combined.equity[0] == pytest.approx(growth)
    # Each later fold's first point repeats the previous fold's end: dropped, with its candle.
    assert len(combined.candles) == sum(len(r.candles) for r in run.results) - 2
    assert (
        combined.candles["timestamp"].is_monotonic_increasing
        and combined.candles["timestamp"].is_unique
    )
    assert len(combined.actions) == len(combined.candles) - 1
    assert len(combined.fills) == sum(len(r.fills) for r in run.results)


class Alternate(RuleStrategy):
    """Long for 7 candles, flat for 7 (by candle index): trades in every fold, and with 1,200
    candles and 3 folds the first two folds end long."""

    name = "alternate"

    def decide(self, t: int, position: tuple[float, float]) -> int:
        return int(Action.BUY) if (t // 7) % 2 == 0 else int(Action.SELL)


def test_combined_folds_keep_each_folds_returns_and_round_trips() -> None:
    candles = synthetic_candles(1200, seed=8)
    run = walk_forward(
        Alternate(), candles, SPEC, RULES, 3, periods_per_year=periods_per_year("1h")
    )
    assert (
        run.results[0].position[-1] > 0 and run.results[1].position[-1] > 0
    )  # folds that end long
    combined = chain_results(run.results)
    # No flat return between folds: the combined returns are the folds' returns, in order.
    np.testing.assert_allclose(
        period_returns(combined.equity),
        np.concatenate([period_returns(r.equity) for r in run.results]),
    )
    # Round trips per fold, together: a fold's open buy is not merged with the next fold's buy.
    np.testing.assert_allclose(
        [x for _, x in round_trips(combined.fills)],
        [x for r in run.results for _, x in round_trips(r.fills)],
    )
    m = result_metrics(combined, periods_per_year("1h"))
    per_fold = [f["metrics"] for f in run.folds]
    assert m["trades"] == sum(f["trades"] for f in per_fold)
    worst = min(x for r in run.results for _, x in round_trips(r.fills))
    assert m["expectancy"] == pytest.approx(
        np.mean([x for r in run.results for _, x in round_trips(r.fills)])
    )
    assert min(x for _, x in round_trips(combined.fills)) == pytest.approx(worst)
    # Fills are rescaled with the equity: every buy is the whole position it opened, and the
    # fees are the folds' fees in the combined curve's money.
    for f, i in zip(combined.fills, combined.fill_index, strict=True):
        if f.side == "buy":
            assert combined.position[i] == pytest.approx(f.amount)
    scales = [1.0]
    for a, b in zip(run.results, run.results[1:], strict=False):
        scales.append(scales[-1] * a.equity[-1] / b.equity[0])
    assert m["fees_paid"] == pytest.approx(
        sum(sc * f["fees_paid"] for sc, f in zip(scales, per_fold, strict=True))
    )
    assert m["exposure"] == pytest.approx(
        np.average([f["exposure"] for f in per_fold], weights=[len(r.actions) for r in run.results])
    )


def test_walk_forward_folds_lie_within_from_and_until() -> None:
    candles = synthetic_candles(1200, seed=8)
    ts = candles["timestamp"]
    run = walk_forward(
        SMACrossover(5, 20), candles, SPEC, RULES, 2, start=ts.iloc[150], end=ts.iloc[1100]
    )
    inner = candles.iloc[150:1101].reset_index(drop=True)
    expected = [f.dates(inner) for f in make_folds(len(inner), 2, SPEC.window)]
    assert [(f["train"], f["val"], f["test"]) for f in run.folds] == [
        (d["train"], d["val"], d["test"]) for d in expected
    ]
    assert (
        run.folds[0]["train"][0] == ts.iloc[150].isoformat()
        and run.folds[-1]["test"][1] == ts.iloc[1100].isoformat()
    )


def test_retraining_never_sees_the_test_candles() -> None:
    candles = synthetic_candles(1200, seed=8)
    seen: list[tuple[pd.Timestamp, Fold]] = []

    def retrain(visible: pd.DataFrame, fold: Fold):
        seen.append((visible["timestamp"].iloc[-1], fold))
        return BuyHold()

    run = walk_forward(None, candles, SPEC, RULES, 3, retrain=retrain)
    assert len(seen) == 3
    for (last_seen, fold), f in zip(seen, run.folds, strict=True):
        assert last_seen == candles["timestamp"].iloc[fold.val[1]]
        assert last_seen < pd.Timestamp(f["test"][0])


def test_evaluate_is_what_the_daemon_calls() -> None:
    candles = synthetic_candles(600, seed=12)
    start, end = candles["timestamp"].iloc[400], candles["timestamp"].iloc[560]
    m = evaluate(SMACrossover(5, 20), candles, SPEC, RULES, start, end)
    assert m["start"] == start.isoformat() and m["end"] == end.isoformat() and m["candles"] == 161
    assert m["strategy"] == "sma" and m["cheating"] is False
    assert m["baselines"]["buyhold"]["start"] == m["start"]
    # The spacing of the candles gives the annualisation: hourly here.
    explicit = evaluate(
        SMACrossover(5, 20), candles, SPEC, RULES, start, end, periods_per_year=8760.0
    )
    assert m["sharpe"] == pytest.approx(explicit["sharpe"])


def _store(tmp_path: Path, candles: pd.DataFrame) -> None:
    """The candles and the market info `chartrl fetch` would store (so the CLI stays offline)."""
    from chartrl.market.markets import save_market
    from chartrl.market.store import CandleStore

    CandleStore(tmp_path / "data").ingest("binance", "BTC/USDT", "1h", candles, "test")
    market = {
        "symbol": "BTC/USDT",
        "taker": 0.001,
        "precision": {"amount": 1e-05},
        "limits": {"amount": {"min": 1e-05}, "cost": {"min": 5.0}},
    }
    save_market(tmp_path / "data", "binance", "BTC/USDT", market, 4)


def test_cli_walk_forward(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from chartrl.cli import main

    for key, value in (("WINDOW", "30"), ("HEIGHT", "32"), ("WIDTH", "32")):
        monkeypatch.setenv(f"CHARTRL__CHART__{key}", value)
    _store(tmp_path, synthetic_candles(900, seed=3))
    out = tmp_path / "wf"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "--log-level",
                "warning",
                "backtest",
                "--strategy",
                "sma",
                "--walk-forward",
                "3",
                "--from",
                "2020-01-03",
                "--out",
                str(out),
            ]
        )
    assert exc.value.code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    folds = m["walk_forward"]["per_fold"]
    assert len(folds) == 3 and m["walk_forward"]["retrain"] is False
    # The warm-up candles loaded before --from are not part of any fold.
    assert folds[0]["train"][0] == "2020-01-03T00:00:00+00:00"
    assert m["start"] == folds[0]["test"][0] and m["end"] == folds[-1]["test"][1]
    growth = np.prod([1 + f["metrics"]["total_return"] for f in folds])
    assert 1 + m["total_return"] == pytest.approx(growth)
    assert "Walk-forward folds" in (out / "report.md").read_text()
    decisions = pd.read_csv(out / "decisions.csv")
    assert decisions["fold"].tolist() == sorted(decisions["fold"]) and set(decisions["fold"]) == {
        0,
        1,
        2,
    }


def test_cli_walk_forward_retrains_a_model_per_fold(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from chartrl.cli import main

    for key, value in (("WINDOW", "30"), ("HEIGHT", "32"), ("WIDTH", "32")):
        monkeypatch.setenv(f"CHARTRL__CHART__{key}", value)
    _store(tmp_path, synthetic_candles(1000, seed=3))
    out = tmp_path / "wf"
    argv = [
        "--log-level",
        "warning",
        "backtest",
        "--strategy",
        "cnnrnn",
        "--walk-forward",
        "2",
        "--retrain",
        "--epochs",
        "1",
        "--imitation-epochs",
        "1",
        "--max-steps-per-epoch",
        "5",
        "--no-progress",
        "--out",
        str(out),
    ]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["strategy"] == "cnnrnn" and m["walk_forward"]["retrain"] is True
    for f in m["walk_forward"]["per_fold"]:
        saved = json.loads((out / "models" / f"fold_{f['fold']}" / "model.json").read_text())
        # Each fold's model saw candles up to its validation end only, never its test candles.
        assert saved["data_range"]["until"] == f["val"][1]
        assert pd.Timestamp(saved["data_range"]["until"]) < pd.Timestamp(f["test"][0])
        assert saved["chart_spec"]["window"] == 30
