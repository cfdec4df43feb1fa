"""`chartrl sweep` before any trial: --param parsing and checks, the spec file, the fold layout
(a property test), and that bad input is refused in one line before Ray starts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chartrl.errors import UsageError
from chartrl.experiments.folds import MIN_RANGE, purge_gap, sweep_folds
from chartrl.experiments.params import config_id, grid, parse_param, parse_params, trial_id

TINY_CHART = (
    "[chart]\nwindow = 40\nheight = 32\nwidth = 48\nma_periods = [5, 10]\nbollinger_period = 10\n"
)


def test_choices_and_ranges_parse_to_their_field_types() -> None:
    norm = parse_param("norm=group,layer")
    assert norm.choices == ("group", "layer") and norm.grid() == ["group", "layer"]
    lr = parse_param("learning-rate=1e-4:1e-3:log")
    assert lr.name == "learning_rate" and lr.log and lr.grid() == [0.0001, 0.000316228, 0.001]
    assert parse_param("n_step=1:5:linear:3").grid() == [1, 3, 5]  # an int field stays int
    assert parse_param("dueling=true,false").choices == (True, False)
    combos = grid(parse_params(["norm=group,layer", "n_step=1,3"]))
    assert len(combos) == 4 and {"norm": "layer", "n_step": 3} in combos
    assert grid([]) == [{}]


def test_config_and_trial_ids_are_canonical_and_filesystem_safe() -> None:
    a = config_id("cnn", {"norm": "group", "learning_rate": 0.0003})
    assert a == "cnn|learning_rate=0.0003|norm=group"
    assert a == config_id("cnn", {"learning_rate": 3e-4, "norm": "group"})  # order and spelling
    tid = trial_id("cnn", {"norm": "group"}, 2, 1)
    assert tid == trial_id("cnn", {"norm": "group"}, 2, 1) and tid.endswith("-s2-f1")
    assert all(c.isalnum() or c in "-_" for c in tid)
    assert tid != trial_id("cnn", {"norm": "layer"}, 2, 1)
    assert trial_id("gru", {}, 1, 0) == "gru-s1-f0"


@pytest.mark.parametrize(
    "text,named",
    [
        ("foo=1,2", "--param foo: no such training field"),
        ("seed=1,2", "use --seeds"),
        ("norm=blue", "--norm must be one of batch, group, layer, none"),
        ("batch_size=1.5", "'1.5' is not an int"),
        ("learning_rate=1e-3:1e-4", "the range needs LO < HI"),
        ("learning_rate=0:1e-3:log", "a log range needs LO > 0"),
        ("learning_rate=1e-4:1e-3:cubic", "scale 'cubic'"),
        ("norm=group:layer", "norm takes a choice list"),
        ("n_step=0:4", "--n-step must be in [1, 64]"),
        ("gamma=0.9,1.5", "gamma must be in (0, 1]"),
        ("learning_rate", "use NAME=a,b,c"),
        ("norm=group,group", "repeats a value"),
    ],
)
def test_bad_params_are_one_line_errors_naming_the_field(text: str, named: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_param(text)
    assert named in str(exc.value) and "\n" not in str(exc.value)


@settings(max_examples=300, deadline=None)
@given(st.integers(200, 20_000), st.integers(1, 8), st.integers(20, 300))
def test_fold_layout_is_ordered_disjoint_and_purged(n: int, k: int, gap: int) -> None:
    try:
        folds = sweep_folds(n, k, gap)
    except UsageError as exc:
        assert "too few" in str(exc)
        assert (n - 2 * k * gap) // (2 * k + 3) < MIN_RANGE  # refused only when it cannot fit
        return
    assert len(folds) == k and folds[-1].test[1] == n - 1
    tests = []
    for f in folds:
        (a, b), (c, d), (e, g) = f.train, f.val, f.test
        assert 0 == a <= b < c <= d < e <= g < n  # train, then validation, then test
        assert c - b - 1 >= gap and e - d - 1 >= gap  # the purge gaps
        assert d - c == g - e >= MIN_RANGE - 1 and b - a + 1 >= 3 * (d - c + 1)
        tests.append((e, g))
    for i, f in enumerate(folds):
        for j, (e, g) in enumerate(tests):
            # no validation range (what chooses checkpoints and configurations) touches any test
            assert g < f.val[0] or e > f.val[1]
            if j >= i:  # a fold never trains on its own test range, nor on a later one
                assert f.train[1] < e
        if i:  # training is anchored and grows through the previous fold's test range
            assert f.train[1] == folds[i - 1].test[1]


def test_the_gap_is_one_chart_window_plus_the_oracle_window() -> None:
    assert purge_gap(250, 24) == 274


def _main(tmp_path, capsys, monkeypatch, *argv: str) -> tuple[int, str, list]:
    """Run the CLI with ray.init replaced by a recorder: a refused sweep must never call it."""
    import ray

    from chartrl.cli import main

    calls: list = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: calls.append((a, k)))
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY_CHART)
    with pytest.raises(SystemExit) as exc:
        main(["-c", str(cfg), "--log-level", "warning", "sweep", "--no-progress", *argv])
    return int(exc.value.code or 0), capsys.readouterr().err, calls


@pytest.mark.parametrize(
    "argv,named",
    [
        (["--param", "foo=1"], "--param foo: no such training field"),
        (["--param", "learning_rate=1e-3:1e-4:log"], "the range needs LO < HI"),
        (["--param", "norm=blue"], "--norm must be one of"),
        (["--folds", "40"], "too few for 40 folds"),
        (["--strategies", "cnn,sma"], "--strategies 'cnn,sma'"),
        (["--search", "optuna"], "--search optuna needs at least one --param"),
        (["--trials", "4"], "give --search optuna or drop --trials"),
        (
            [
                "--search",
                "optuna",
                "--trials",
                "7",
                "--param",
                "norm=group,layer",
                "--param",
                "frame_stack=1:3",
            ],
            "--trials 7: the --param space holds only 6 different configurations",
        ),
        (["--strategies", "gru", "--param", "frame_stack=2,4"], "gru has nothing to train"),
        (["--strategies", "cnn,gru", "--frame-stack", "2"], "gru has nothing to train"),
        (["--validation-fraction", "0.2"], "a sweep's folds set the split"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial must be > 0"),
        (["--device", "cuda"], "--device cuda needs --gpus-per-trial > 0"),
    ],
)
def test_bad_sweeps_are_refused_in_one_line_before_ray_starts(
    tmp_path, capsys, monkeypatch, argv, named
) -> None:
    out = tmp_path / "sweep"
    code, err, calls = _main(
        tmp_path, capsys, monkeypatch, "--synthetic", "1500", *argv, "--out", str(out)
    )
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert calls == [] and not out.exists()  # Ray not started, nothing written


def test_a_spec_file_gives_the_fields_and_options_win(tmp_path, capsys, monkeypatch) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(
        'strategies = ["cnn"]\nfolds = 40\n[series]\nsynthetic = 1500\n[train]\nepochs = 1\n'
    )
    code, err, calls = _main(
        tmp_path, capsys, monkeypatch, "--spec", str(spec), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "too few for 40 folds" in err and calls == []  # the file's folds
    spec.write_text('strategies = ["cnn"]\nfold = 2\n')
    code, err, _ = _main(
        tmp_path, capsys, monkeypatch, "--spec", str(spec), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "unknown key 'fold'" in err
    spec.write_text('strategies = ["cnn"]\n[train]\nn_step = 0\n')
    code, err, _ = _main(
        tmp_path, capsys, monkeypatch, "--spec", str(spec), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "--n-step must be in [1, 64]" in err


def test_resume_of_nothing_and_options_on_resume_are_refused(tmp_path, capsys, monkeypatch) -> None:
    code, err, calls = _main(
        tmp_path, capsys, monkeypatch, "--resume", "--out", str(tmp_path / "none")
    )
    assert code == 2 and "no sweep there" in err and calls == []
    code, err, _ = _main(
        tmp_path, capsys, monkeypatch, "--resume", "--folds", "2", "--out", str(tmp_path / "none")
    )
    assert code == 2 and "drop --folds" in err


def test_a_grid_over_frame_stack_gives_the_cnn_both_and_the_others_no_stack() -> None:
    from chartrl.experiments.sweep import total_trials
    from sweep_kit import tiny_plan

    plan, _ = tiny_plan(
        strategies=["cnn", "gru"], param_texts=["frame_stack=1,4", "norm=group,layer"]
    )
    configs = grid(plan.params)
    cells = {(s, configs[i]["frame_stack"], configs[i]["norm"]) for s, i in plan.cells()}
    assert cells == {
        ("cnn", 1, "group"),
        ("cnn", 1, "layer"),
        ("cnn", 4, "group"),
        ("cnn", 4, "layer"),
        ("gru", 1, "group"),
        ("gru", 1, "layer"),
    }
    assert total_trials(plan) == 6 * 2 * 2  # cells x seeds x folds


def test_the_shipped_article_spec_reads() -> None:
    from argparse import Namespace
    from pathlib import Path

    from chartrl.experiments.spec import apply_spec

    path = Path(__file__).resolve().parents[1] / "config" / "sweep-article.toml"
    args = Namespace(strategies=None, seeds=None, folds=None, param=[], exchange=None)
    args.__dict__.update(symbol=None, timeframe=None, data_dir=None, date_from=None)
    args.__dict__.update(date_until=None, synthetic=None, cpus_per_trial=None, max_failures=None)
    assert apply_spec(args, path) == {}
    assert args.strategies == "cnn,cnnrnn,gru" and args.param == ["frame_stack=1,4"]
    assert args.symbol == "BTC/USDT" and args.folds == 3
    assert args.reference == "cnn|frame_stack=1"  # the plain CNN: the article's baseline


@pytest.mark.parametrize(
    "reference,refused",
    [("cnn|frame_stack=1", False), ("gru", False), ("cnn|frame_stack=2", True), ("sma", True)],
)
def test_a_reference_is_a_strategy_or_a_grid_configuration(
    tmp_path, capsys, monkeypatch, reference: str, refused: bool
) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(
        f'strategies = ["cnn", "gru"]\nparams = ["frame_stack=1,4"]\nreference = "{reference}"\n'
        "folds = 40\n[series]\nsynthetic = 1500\n"
    )
    code, err, calls = _main(
        tmp_path, capsys, monkeypatch, "--spec", str(spec), "--out", str(tmp_path / "o")
    )
    # accepted ones go on to the next check (too few candles for 40 folds), before Ray either way
    assert code == 2 and calls == [] and len(err.strip().splitlines()) == 1, err
    assert (f"reference {reference!r}: use one of the strategies" in err) == refused, err
    assert ("too few for 40 folds" in err) == (not refused), err
