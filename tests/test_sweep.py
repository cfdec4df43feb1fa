"""`chartrl sweep` end to end on an embedded Ray (one per module, 2 CPUs): the result rows and
trial files, a crashing trial retried and recorded while the sweep goes on, Optuna, compare."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from chartrl.experiments.results import COLUMNS
from chartrl.experiments.sweep import run_sweep
from sweep_kit import CHART_TOML, tiny_plan

# Each test runs real Tune trials (tens of seconds on the shared 2-core machine).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def ray_up():
    """One embedded Ray for the module (starting one costs seconds); shut down after, so no Ray
    process outlives the tests."""
    import ray

    from chartrl.experiments.sweep import init_ray

    assert init_ray(None, num_cpus=2)
    yield
    ray.shutdown()


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as fh:
        r = csv.DictReader(fh)
        assert tuple(r.fieldnames) == COLUMNS
        return list(r)


def test_sweep_of_2_strategies_2_seeds_2_folds_writes_8_rows_and_the_trial_files(tmp_path) -> None:
    plan, candles = tiny_plan()
    out = tmp_path / "sweep"
    report = run_sweep(plan, candles, out, progress=False)
    got = rows(out)
    assert len(got) == 8 and len({r["trial_id"] for r in got}) == 8
    assert {(r["strategy"], r["seed"], r["fold"]) for r in got} == {
        (s, str(seed), str(f)) for s in ("cnn", "gru") for seed in (1, 2) for f in (0, 1)
    }
    ts = candles["timestamp"]
    for r in got:
        assert r["status"] == "done" and r["error"] == "" and r["attempts"] == "1", r
        assert r["config_id"] == r["strategy"] and r["params"] == "{}"
        fold = plan.folds[int(r["fold"])]
        assert r["test_from"] == ts.iloc[fold.test[0]].isoformat()
        assert r["val_until"] == ts.iloc[fold.val[1]].isoformat()
        assert int(r["test_candles"]) == fold.test[1] - fold.test[0] + 1
        assert (
            r["test_buy_hold_return"] != "" and r["chosen_epoch"] != "" and float(r["seconds"]) > 0
        )
        trial = out / "trials" / r["trial_id"]
        history = (trial / "history.csv").read_text().splitlines()
        assert history[0].startswith("stage,epoch,updates,kind,loss,val_total_return")
        with (trial / "test_equity.csv").open() as fh:
            equity = list(csv.DictReader(fh))
        assert [k for k in equity[0]] == ["timestamp", "equity", "buy_hold"]
        assert (
            equity[0]["timestamp"] == r["test_from"] and equity[-1]["timestamp"] == r["test_until"]
        )
        assert any((out / "tensorboard" / r["trial_id"]).glob("events.out.tfevents.*"))
        meta = json.loads((trial / "model.json").read_text())
        # the model never saw the test range: its candles end with the validation range
        assert meta["data_range"]["until"] == r["val_until"]
    assert report == out / "report.md" and report.is_file()
    text = report.read_text()
    for section in (
        "## Trials",
        "## Deflated Sharpe ratio",
        "## Probability of backtest overfitting",
    ):
        assert section in text  # the real report (experiments/report.py), not a stand-in
    # the fold layout of the stored plan, drawn
    assert "![walk-forward folds](folds.png)" in text
    assert (out / "folds.png").stat().st_size > 10_000


def test_a_crashing_trial_is_retried_recorded_and_the_sweep_goes_on(tmp_path) -> None:
    # 1000 lanes cannot be fed by a fold's training range: the trainer refuses, every attempt.
    plan, candles = tiny_plan(
        folds=1, strategies=["cnn"], seeds=[1], param_texts=["num_envs=2,1000"], max_failures=1
    )
    out = tmp_path / "sweep"
    run_sweep(plan, candles, out, progress=False)
    by_lanes = {json.loads(r["params"])["num_envs"]: r for r in rows(out)}
    assert by_lanes[2]["status"] == "done" and by_lanes[2]["attempts"] == "1"
    bad = by_lanes[1000]
    assert bad["status"] == "failed" and bad["attempts"] == "2"  # the first try and one retry
    assert "--num-envs 1000" in bad["error"] and bad["test_total_return"] == ""
    assert bad["config_id"] == "cnn|num_envs=1000"


def test_optuna_searches_a_range_with_every_seed_and_fold_of_each_configuration(tmp_path) -> None:
    plan, candles = tiny_plan(
        n=900,
        folds=1,
        strategies=["cnn"],
        seeds=[1, 2],
        search="optuna",
        trials=2,
        param_texts=["learning_rate=1e-4:1e-3:log"],
    )
    out = tmp_path / "sweep"
    run_sweep(plan, candles, out, progress=False)
    got = rows(out)
    assert len(got) == 4 and all(r["status"] == "done" for r in got)
    configs = {r["config_id"] for r in got}
    assert len(configs) == 2  # two sampled configurations, each run with seeds 1 and 2
    for c in configs:
        assert sorted(r["seed"] for r in got if r["config_id"] == c) == ["1", "2"]
        lr = json.loads(next(r["params"] for r in got if r["config_id"] == c))["learning_rate"]
        assert 1e-4 <= lr <= 1e-3


def test_compare_is_a_one_fold_sweep(tmp_path, capsys) -> None:
    from chartrl.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(CHART_TOML)
    out = tmp_path / "cmp"
    fast = [
        "--epochs",
        "1",
        "--imitation-epochs",
        "1",
        "--num-envs",
        "2",
        "--learning-starts",
        "16",
    ]
    fast += ["--max-steps-per-epoch", "6", "--oracle-window", "4", "--synthetic", "700"]
    with pytest.raises(SystemExit) as exc:
        main(
            ["-c", str(cfg), "--log-level", "warning", "compare", "--no-progress"]
            + ["--strategies", "cnn,gru", "--seeds", "1", *fast, "--out", str(out)]
        )
    assert exc.value.code == 0, capsys.readouterr().err
    got = rows(out)
    assert sorted((r["strategy"], r["fold"]) for r in got) == [("cnn", "0"), ("gru", "0")]
    assert "2 of 2 trials done, 0 failed" in capsys.readouterr().out
    assert (out / "report.md").is_file()
