"""`chartrl sweep --series A,B` (issue 14): the first series is judged (its folds, validation and
test ranges), the others add training candles from each fold's training range only."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from chartrl.account.fills import MarketRules
from chartrl.experiments.trainable import fold_data
from chartrl.testing.synthetic import synthetic_candles
from sweep_kit import tiny_plan
from test_multiseries import (
    TINY_DQN,
    _run,
    store,  # noqa: F401  (the fixture: BTC/USDT and ETC/BTC stored)
)

JUDGED, OTHER = "binance:BTC/USDT:1h", "binance:ETC/BTC:1h"


def _plan_with_companion(start: str = "2020-01-01 06:00"):
    plan, candles = tiny_plan()
    other = synthetic_candles(1500, seed=9, start=start, price0=0.0005)
    plan.meta["training_series"] = [
        {"name": JUDGED, "weight": None},
        {"name": OTHER, "weight": None},
    ]
    plan.companions = [{"name": OTHER, "rules": {}}]
    return plan, candles, [(OTHER, other, MarketRules())]


def test_a_further_series_adds_training_candles_up_to_the_folds_training_end_only() -> None:
    plan, candles, companions = _plan_with_companion()
    ts = candles["timestamp"]
    for fold in plan.folds:
        alone = fold_data(candles, plan, fold)
        data = fold_data(candles, plan, fold, companions)
        judged, other = data.series
        assert (judged.name, other.name) == (JUDGED, OTHER)
        # the judged series trains, validates and cuts its oracle exactly as in a one-series sweep
        np.testing.assert_array_equal(judged.train, alone.train)
        np.testing.assert_array_equal(data.validation, alone.validation)
        assert judged.validation_start == alone.validation_start
        # the other one: training only, every candle of it inside the judged training range
        assert len(other.validation) == 0 and len(other.train) >= 64
        seen = data.candles["timestamp"].iloc[other.start : other.stop]
        assert seen.min() >= ts.iloc[fold.train[0]] and seen.max() <= ts.iloc[fold.train[1]]
        assert set(other.train) <= set(range(other.start, other.stop - 1))
        assert other.validation_start == other.stop  # its oracle sees its (cut) candles only


def test_a_further_series_too_short_for_a_fold_is_refused_naming_it() -> None:
    from chartrl.errors import UsageError
    from chartrl.experiments.trainable import check_companions

    plan, candles, _ = _plan_with_companion()
    end = candles["timestamp"].iloc[plan.folds[0].train[1]]
    late = synthetic_candles(1500, seed=9, start=f"{end:%Y-%m-%d %H:%M}")
    with pytest.raises(UsageError, match=f"--series {OTHER}: only 0 training charts in fold 0"):
        check_companions(candles, plan.folds, [(OTHER, late, None)], plan.spec)


def _sweep_cli(capsys, *argv: str) -> tuple[int, str]:
    """One cnn seed over two folds, the tiny DQN budget of test_multiseries."""
    sweep = ("sweep", "--no-progress", "--strategies", "cnn", "--seeds", "1", "--folds", "2")
    code, _, err = _run(capsys, *sweep, *TINY_DQN, "--oracle-window", "4", *argv)
    return code, err


def test_a_late_series_is_refused_before_ray_starts(
    store: Path,  # noqa: F811
    tmp_path: Path,
    capsys,
    monkeypatch,
) -> None:
    import ray

    from chartrl.market.store import CandleStore

    calls: list = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: calls.append(a))
    late = synthetic_candles(300, seed=8, start="2021-01-10", price0=0.0005)
    CandleStore(store).ingest("binance", "LTC/BTC", "1h", late, "test")
    out = tmp_path / "sweep"
    code, err = _sweep_cli(capsys, "--series", f"{JUDGED},binance:LTC/BTC:1h", "--out", str(out))
    assert code == 2 and "--series binance:LTC/BTC:1h: only 0 training charts in fold 0" in err
    assert len(err.strip().splitlines()) == 1 and calls == [] and not out.exists()


@pytest.mark.slow
def test_a_sweep_over_two_series_judges_the_first_and_trains_on_both(
    store: Path,  # noqa: F811
    tmp_path: Path,
    capsys,
) -> None:
    out = tmp_path / "sweep"
    code, err = _sweep_cli(
        capsys,
        "--series",
        f"{JUDGED},{OTHER}",
        "--folds",
        "1",
        "--seeds",
        "2",
        "--out",
        str(out),
    )  # one fold: ETC/BTC starts two days after BTC/USDT, too late for fold 0 of two
    assert code == 0, err
    with (out / "results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"done"}
    plan = json.loads((out / "sweep.json").read_text())
    assert [c["name"] for c in plan["companions"]] == [OTHER]
    assert plan["companions"][0]["rules"]["min_notional"] == 0.0001  # ETC/BTC's own market
    for r in rows:
        trial = out / "trials" / r["trial_id"]
        meta = json.loads((trial / "model.json").read_text())
        names = [t["name"] for t in meta["training_series"]]
        assert names == [JUDGED, OTHER] and meta["series"]["symbol"] == "BTC/USDT"
        # the other series' range ends with the judged training range, before validation
        assert meta["training_series"][1]["until"] < r["val_from"]
        with (trial / "history.csv").open(newline="") as fh:
            last = list(csv.DictReader(fh))[-1]
        assert int(last["transitions@binance_ETC-BTC_1h"]) > 0  # the lanes visit both
        assert int(last["transitions@binance_BTC-USDT_1h"]) > 0
    assert f"Judged: `{JUDGED}`" in (out / "report.md").read_text()


def test_a_spec_file_names_the_series_as_a_list(tmp_path: Path) -> None:
    import argparse

    from chartrl.experiments.spec import apply_spec

    spec = tmp_path / "s.toml"
    spec.write_text(f'[series]\nseries = ["{JUDGED}", "{OTHER}"]\nseries_weights = [2, 1]\n')
    args = argparse.Namespace(series=None, series_weights=None)
    apply_spec(args, spec)
    assert (args.series, args.series_weights) == (f"{JUDGED},{OTHER}", "2,1")
