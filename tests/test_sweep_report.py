"""The sweep's statistics and report (experiments/stats.py, experiments/report.py) on a synthetic
sweep directory with the interface's files (chartrl.testing.sweepdir, docs/experiments.md): 2 strategies x 2 seeds
x 2 folds with one failed trial; the DSR against a worked example; trial counting."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from chartrl.errors import DataError
from chartrl.experiments import stats
from chartrl.experiments.report import write_report
from chartrl.testing.sweepdir import make_sweep_dir
from chartrl.train.curves import aligned


def make_sweep(
    root: Path, *, fail: tuple = (("gru", 2, 1),), flat: tuple[str, int, int] | None = None
) -> Path:
    """2 strategies (cnn drifts up, gru does not) x 2 seeds x 2 folds of 60 hourly test candles,
    one configuration each; ``fail``: the (strategy, seed, fold) of failed trials; ``flat``: a
    run that never trades."""
    return make_sweep_dir(root, fail=fail, flat=flat)


SECTIONS = (
    "# Sweep report",
    "## Walk-forward folds",
    "## Trials",
    "## Test metrics per strategy",
    "## Paired differences against `cnn`",
    "## Beating buy and hold",
    "## Skill p-values",
    "## Deflated Sharpe ratio",
    "## Probability of backtest overfitting (CSCV)",
    "## Learning curves",
)
PNGS = ("metrics.png", "paired.png", "pbo.png", "curves.png", "imitation.png")


def test_write_report_has_every_section_the_pngs_and_the_failed_trial(tmp_path: Path) -> None:
    make_sweep(tmp_path, flat=("cnn", 2, 0))
    path = write_report(tmp_path)
    assert path == tmp_path / "report.md"
    text = path.read_text()
    for heading in SECTIONS:
        assert f"\n{heading}\n" in f"\n{text}", heading
    for png in PNGS:
        assert (tmp_path / png).stat().st_size > 5_000, png
        assert f"]({png})" in text
    # The failed trial: counted, named with its error, and in the DSR's trial count.
    assert (
        "8 runs (configuration x seed x fold) of 2 configuration(s): 7 finished, 1 failed" in text
    )
    assert "| gru-s2-f1 | RuntimeError: CUDA out of memory |" in text
    assert "| gru | 1 | 4 | 3 | 1 | 0 |" in text
    assert "Trials N = 2: every configuration tried, finished or failed" in text
    assert "Counting every run as a trial (N = 8" in text
    # The never-trading run counts (return 0) and is flagged.
    assert "1 finished run(s) never traded" in text and "| (2, 0) |" in text
    assert "7 tests were run" in text
    assert "PBO " in text and " combinations (12 blocks, 2 configurations)" in text
    # The imitation stage per strategy from the finished runs' history.csv, by hand: cnn's 3
    # drifting runs end at 0.4 and its flat one at 0.5 (mean 0.425, std 0.05), rising once (the
    # flat run's 0.6 -> 0.65); gru's 3 finished runs all end at 0.5 after one rise each.
    assert "| cnn | 4 | 0.4250 ± 0.0500 [0.4000, 0.4750] | -0.1750 ± 0.0500" in text
    assert "| 1 of 8 |" in text
    assert "| gru | 3 | 0.5000 ± 0.0000 [0.5000, 0.5000] | -0.1000 ± 0.0000" in text
    assert "| 3 of 6 |" in text


def _pixels(img, rgb: tuple[int, int, int]) -> int:
    import numpy as np

    return int(np.sum(np.all(np.abs(img[..., :3] - np.array(rgb) / 255) < 0.02, axis=-1)))


def test_the_report_draws_the_fold_layout_of_the_stored_plan(tmp_path: Path) -> None:
    """sweep.json's folds as a table of dated ranges and folds.png: the training, validation and
    test colours and the purge gaps' hatching each fill part of the picture."""
    from matplotlib.image import imread

    from chartrl.experiments.plan import save_plan
    from sweep_kit import tiny_plan

    make_sweep(tmp_path)
    plan, candles = tiny_plan()  # 2 folds over 1,200 synthetic hourly candles
    save_plan(plan, candles, tmp_path)
    text = write_report(tmp_path).read_text()
    assert "![walk-forward folds](folds.png)" in text
    ts, f = candles["timestamp"], plan.folds[1]

    def span(a: int, b: int) -> str:
        return f"{ts[a]:%Y-%m-%d %H:%M} .. {ts[b]:%Y-%m-%d %H:%M} ({b - a + 1:,})"

    assert f"| 1 | {span(*f.train)} | {span(*f.val)} | {span(*f.test)} |" in text
    png = tmp_path / "folds.png"
    assert png.stat().st_size > 10_000
    img = imread(png)
    assert img.shape[0] > 200 and img.shape[1] > 800
    # training (C0), validation (C2), test (C3), the gaps' face (0.92 grey)
    for rgb in ((31, 119, 180), (44, 160, 44), (214, 39, 40), (235, 235, 235)):
        assert _pixels(img, rgb) > 2_000, rgb


def test_stats_count_failures_and_never_traded_runs(tmp_path: Path) -> None:
    make_sweep(tmp_path, flat=("cnn", 2, 0))
    df = stats.load_results(tmp_path)
    flat = df[(df.strategy == "cnn") & (df.seed == 2) & (df.fold == 0)].iloc[0]
    assert flat.never_traded and flat.test_sharpe == 0.0 and flat.test_total_return == 0.0
    c = stats.trial_counts(df)
    assert (c["runs"], c["done"], c["failed"], c["attempts"]) == (8, 7, 1, 9)
    assert c["dsr_trials"] == 2 and c["configurations_all_failed"] == []
    summary = stats.summarize(df)
    assert summary["gru"]["done"] == 3 and summary["gru"]["failed"] == 1
    assert len(summary["cnn"]["sharpe"]["values"]) == 4  # the flat run is in, as 0
    assert summary["cnn"]["never_traded"] == [(2, 0)]
    # A configuration whose every run failed was still tried: it raises N.
    extra = df[df.strategy == "gru"].assign(
        config_id="gru|lr=0.01", status="failed", trial_id=lambda d: d.trial_id + "-b"
    )
    c2 = stats.trial_counts(pd.concat([df, extra]))
    assert c2["dsr_trials"] == 3 and c2["configurations_all_failed"] == ["gru|lr=0.01"]
    assert c2["failed"] == 5


def test_paired_differences_pair_on_seed_and_fold(tmp_path: Path) -> None:
    # gru seed 1 fold 1 failed: 3 pairs, each gru minus cnn at the same (seed, fold); pairing by
    # position would set gru (2, 0) against cnn (1, 1).
    make_sweep(tmp_path, fail=(("gru", 1, 1),))
    df = stats.load_results(tmp_path)
    paired = stats.paired_differences(df, "cnn")["gru"]["total_return"]
    ret = {(r.strategy, r.seed, r.fold): r.test_total_return for r in df.itertuples()}
    want = [ret[("gru", s, f)] - ret[("cnn", s, f)] for s, f in ((1, 0), (2, 0), (2, 1))]
    assert paired["pairs"] == 3 and paired["values"] == pytest.approx(want)
    assert stats.paired_differences(df, "resnet") == {}


def test_a_configuration_as_the_reference_pairs_each_configuration_with_it(
    tmp_path: Path,
) -> None:
    """The article sweep's baseline is the plain CNN (cnn|frame_stack=1), not the cnn's
    configurations averaged: each other configuration, the cnn's own included, minus it."""
    make_dir = make_sweep_dir(tmp_path, configs=2)
    df = stats.load_results(make_dir)
    paired = stats.paired_differences(df, "cnn|lr=0.001")
    assert sorted(paired) == ["cnn|lr=0.002", "gru|lr=0.001", "gru|lr=0.002"]
    ret = {(r.config_id, r.seed, r.fold): r.test_total_return for r in df.itertuples()}
    cells = [(s, f) for s in (1, 2) for f in (0, 1)]
    want = [ret[("cnn|lr=0.002", *c)] - ret[("cnn|lr=0.001", *c)] for c in cells]
    assert paired["cnn|lr=0.002"]["total_return"]["values"] == pytest.approx(want)
    text = write_report(make_dir, reference="cnn|lr=0.001").read_text()
    assert "## Paired differences against `cnn|lr=0.001`" in text
    assert "| gru/lr=0.002 | 4 |" in text  # a table cell: no bare '|' in the name


def test_buy_and_hold_and_skill_summaries(tmp_path: Path) -> None:
    make_sweep(tmp_path, flat=("cnn", 2, 0))
    df = stats.load_results(tmp_path)
    bh = stats.beat_buy_hold(df)
    d = df[df.status == "done"]
    for name in ("cnn", "gru"):
        g = d[d.strategy == name]
        assert bh[name]["runs"] == len(g)
        assert bh[name]["runs_beat"] == int((g.test_total_return > 0.01).sum())
    assert bh["cnn"]["runs_beat"] <= 3  # the flat run (return 0) is below buy and hold (+1 %)
    sk = stats.skill_summary(df)
    # cnn p = 0.01, 0.01, 1.0 (flat), 0.01; gru 0.4 x 3 (one failed): 7 tests, 3 below 0.05,
    # 0.35 expected by chance, Bonferroni threshold 0.05 / 7 = 0.0071 passes none.
    assert sk["per_strategy"]["cnn"] == {"tests": 4, "median": 0.01, "below": 3}
    assert sk["per_strategy"]["gru"] == {"tests": 3, "median": 0.4, "below": 0}
    assert (sk["tests"], sk["below"], sk["bonferroni"]) == (7, 3, 0)
    assert sk["expected_by_chance"] == pytest.approx(0.35)


def _series(values: list[float]) -> pd.Series:
    ts = pd.date_range("2024-01-01", periods=len(values), freq="h", tz="UTC")
    index = pd.MultiIndex.from_arrays([[0] * len(values), ts], names=["fold", "timestamp"])
    return pd.Series(values, index=index)


def test_deflated_sharpe_of_the_best_configuration_worked_by_hand() -> None:
    # a = [0.02, 0, 0.02, 0]: mean 0.01, sample sd 0.01 * sqrt(4/3) -> per-period SR sqrt(3)/2
    #   = 0.8660; two-point symmetric: skew 0, kurtosis 1, so the SR's standard error is
    #   sqrt((1 - 0 + (1 - 1)/4 * SR^2) / (n - 1)) = 1/sqrt(3) and PSR = Phi(1.5) = 0.9332.
    # b = [0.02, 0, 0, 0]: mean 0.005, sample sd 0.01 -> SR 0.5.  a is the best.
    # Trials N = 3 (a third configuration failed: tried, no returns). Spread of the SRs:
    #   sd(0.8660, 0.5) = 0.3660 / sqrt(2) = 0.25882.
    # SR0 = 0.25882 * ((1 - g) * Phi^-1(1 - 1/3) + g * Phi^-1(1 - 1/(3e))), g = 0.57722
    #     = 0.25882 * (0.42278 * 0.43073 + 0.57722 * 1.16196) = 0.25882 * 0.85280 = 0.22072
    # DSR = Phi((0.86603 - 0.22072) * sqrt(3)) = Phi(1.11770) = 0.8682.
    returns = {"a": _series([0.02, 0.0, 0.02, 0.0]), "b": _series([0.02, 0.0, 0.0, 0.0])}
    d = stats.deflated_best(returns, trials=3)
    assert d["config_id"] == "a" and d["trials"] == 3 and d["periods"] == 4
    assert d["sharpe_per_period"] == pytest.approx(math.sqrt(3) / 2)
    assert (d["skew"], d["kurtosis"]) == pytest.approx((0.0, 1.0))
    assert d["sr_std"] == pytest.approx(0.25882, abs=1e-5)
    assert d["psr"] == pytest.approx(0.9332, abs=1e-4)
    assert d["sr_benchmark"] == pytest.approx(0.22072, abs=1e-5)
    assert d["dsr"] == pytest.approx(0.8682, abs=1e-4)
    # Hourly candles: annualised = per-period * sqrt(8760), 365 days of 24.
    assert d["sharpe_annualised"] == pytest.approx(math.sqrt(3) / 2 * math.sqrt(8760))
    # More trials, a higher bar: N = 1 leaves the PSR.
    assert stats.deflated_best(returns, trials=1)["dsr"] == pytest.approx(d["psr"])
    assert stats.deflated_best(returns, trials=30)["dsr"] < d["dsr"]


def test_incomplete_configurations_are_named_and_pbo_explained(tmp_path: Path) -> None:
    # Both gru runs of fold 1 failed: gru has no fold-1 result, so neither PBO has 2
    # configurations; the report says why instead of showing a number.
    make_sweep(tmp_path, fail=(("gru", 1, 1), ("gru", 2, 1)))
    text = write_report(tmp_path, reference="resnet").read_text()
    assert (
        "- per-candle Sharpe: not computed: 1 configuration(s) with returns on every fold" in text
    )
    assert "- fold-level test Sharpe: not computed:" in text
    assert "Left out, without a finished run on every fold: 1 configuration(s)." in text
    assert "No (seed, fold) where `resnet` and another strategy both finished" in text
    assert not (tmp_path / "pbo.png").exists() and not (tmp_path / "paired.png").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.unlink(), "no results.csv in"),
        (lambda p: p.write_text("trial_id,strategy\nx,cnn\n"), "missing column(s) config_id"),
        (
            lambda p: p.write_text(p.read_text().replace(",done,", ",running,", 1)),
            "status 'running'",
        ),
        (
            lambda p: p.write_text(p.read_text().replace(",1.5,", ",fast,", 1)),
            "column seconds is 'fast'",
        ),
        (
            lambda p: p.write_text(p.read_text().replace("gru-s1-f0", "cnn-s1-f0")),
            "'cnn-s1-f0' appears more than once",
        ),
    ],
)
def test_bad_results_are_refused_in_one_line(tmp_path: Path, edit, message: str) -> None:
    make_sweep(tmp_path)
    edit(tmp_path / "results.csv")
    with pytest.raises(DataError, match=re.escape(message)) as err:
        write_report(tmp_path)
    assert "\n" not in str(err.value)


def test_a_sweep_where_everything_failed_still_reports(tmp_path: Path) -> None:
    every = tuple((s, seed, f) for s in ("cnn", "gru") for seed in (1, 2) for f in (0, 1))
    make_sweep(tmp_path, fail=every)
    text = write_report(tmp_path).read_text()
    assert "0 finished, 8 failed; 16 attempts" in text
    assert "still counted as tried): `cnn|lr=0.001`, `gru|lr=0.001`" in text
    assert "No finished run has test returns: no DSR." in text
    assert "no paired differences" in text and "no learning curves" in text
    assert not list(tmp_path.glob("*.png"))


def test_a_failure_message_never_carries_a_secret(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    path = tmp_path / "results.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[df.status == "failed", "error"] = (
        "ExchangeError: GET /api?apiKey=SECRETKEY123&x=1 failed"
    )
    df.to_csv(path, index=False)
    text = write_report(tmp_path).read_text()
    assert "SECRETKEY123" not in text and "apiKey=***" in text


def test_learning_curves_align_runs_validated_at_different_updates() -> None:
    # Two folds of different lengths: validations at 0, 10, 20 and at 0, 15, 30 updates.
    a, b = {0: 0.0, 10: 1.0, 20: 2.0}, {0: 0.0, 15: 3.0, 30: 6.0}
    xs, y = aligned([a, b])
    assert xs == [0] and y.tolist() == [[0.0], [0.0]]
    # Interpolated over 0..20 (what both reached): a at 15 = 1.5; b at 10 = 2, at 20 = 4.
    xs, y = aligned([a, b], interpolate=True)
    assert xs == [0, 10, 15, 20]
    assert y.tolist() == [[0.0, 1.0, 1.5, 2.0], [0.0, 2.0, 3.0, 4.0]]


def test_a_missing_figure_is_counted_in_the_table(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    path = tmp_path / "results.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[df.trial_id == "cnn-s1-f0", "test_max_drawdown"] = ""
    df.to_csv(path, index=False)
    text = write_report(tmp_path).read_text()
    cnn = next(line for line in text.splitlines() if line.startswith("| cnn | 4 | 0 |"))
    assert cnn.count("(1 missing)") == 1
    assert "| cnn | 4 | 0.010 | 4 (100%) |" in text


def test_an_unreadable_equity_file_is_refused_in_one_line(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    eq = tmp_path / "trials" / "cnn-s1-f0" / "test_equity.csv"
    eq.write_text(eq.read_text().replace("2024-01-01T05:00:00+00:00", "yesterday"))
    with pytest.raises(DataError, match="cnn-s1-f0/test_equity.csv: unreadable timestamp") as err:
        write_report(tmp_path)
    assert "\n" not in str(err.value)
