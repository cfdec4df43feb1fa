"""Comparing policies (train/compare.py): honest statistics across seeds (sample std, bootstrap interval, never-traded
seeds counted and flagged, paired differences against cnn) and learning curves over updates."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chartrl.train import seedstats
from chartrl.train.compare import (
    curve,
    markdown_table,
    paired_differences,
    plot_curves,
    summarize,
)


def run(ret: float, sharpe: float | None = 1.0, trades: int = 4, exposure: float = 0.3) -> list:
    """A run's history: imitation end, two DQN validations (the last one final)."""
    final = {
        "stage": "dqn",
        "kind": "epoch",
        "epoch": 1,
        "updates": 20,
        "loss": 0.25,
        "val_total_return": ret,
        "val_sharpe": sharpe,
        "val_max_drawdown": 0.2,
        "val_trades": trades,
        "val_trades_per_week": trades / 2,
        "val_exposure": exposure,
        "val_turnover": 1000.0 * trades,
        "val_skill_p_value": 0.5,
    }
    return [
        {
            "stage": "imitation",
            "kind": "epoch",
            "epoch": 1,
            "updates": 0,
            "loss": 1.0,
            "val_total_return": 0.01,
            "val_turnover": 10.0,
        },
        {**final, "kind": "eval", "updates": 10, "val_total_return": ret / 2, "loss": 0.5},
        final,
    ]


def flat() -> list:
    """A seed whose final policy never traded: no fill, no Sharpe."""
    h = run(0.0, sharpe=None, trades=0, exposure=0.0)
    h[-1]["val_turnover"] = 0.0
    return h


def test_sample_std_and_bootstrap_interval_across_seeds() -> None:
    s = summarize({"cnn": [run(0.10), run(0.30), run(0.20)]})["cnn"]["total_return"]
    assert s["mean"] == pytest.approx(0.20)
    assert s["std"] == pytest.approx(statistics.stdev([0.1, 0.3, 0.2]))  # ddof=1, not 0.0816
    lo, hi = s["ci95"]
    assert 0.10 <= lo < 0.20 < hi <= 0.30
    one = summarize({"cnn": [run(0.1)]})["cnn"]["total_return"]
    assert one["std"] is None and one["ci95"] is None  # one seed has no spread to show


def test_a_seed_that_never_trades_counts_as_zero_and_is_flagged() -> None:
    s = summarize({"cnnrnn": [run(0.30, sharpe=2.0), flat()]})["cnnrnn"]
    assert s["never_traded"] == [2]
    assert s["total_return"]["values"] == [0.30, 0.0] and s["total_return"]["mean"] == 0.15
    assert s["sharpe"]["values"] == [2.0, 0.0] and s["sharpe"]["missing"] == 0  # not dropped
    table = markdown_table({"cnnrnn": s}, None)
    assert table.splitlines()[2].endswith("| seed 2 |")


def test_paired_difference_against_cnn_removes_what_the_seeds_share() -> None:
    """Seeds differ a lot; gru beats cnn by 5 points on every seed: the paired difference says so
    with no spread, the unpaired spread would hide it."""
    cnn = [run(r) for r in (-0.2, 0.1, 0.4)]
    gru = [run(r + 0.05) for r in (-0.2, 0.1, 0.4)]
    d = paired_differences({"cnn": cnn, "gru": gru})
    assert set(d) == {"gru"}
    ret = d["gru"]["total_return"]
    assert ret["mean"] == pytest.approx(0.05) and ret["std"] == pytest.approx(0.0, abs=1e-12)
    assert ret["ci95"] == pytest.approx((0.05, 0.05))
    assert summarize({"gru": gru})["gru"]["total_return"]["std"] > 0.2
    # Seed i is paired with seed i: shuffling the seeds of one side changes the result.
    shuffled = paired_differences({"cnn": cnn, "gru": gru[::-1]})["gru"]["total_return"]
    assert shuffled["std"] > 0.1
    assert paired_differences({"gru": gru}) == {}  # no cnn, no reference


def test_table_shows_exposure_trades_per_week_skill_and_the_paired_block() -> None:
    h = {"cnn": [run(0.1), run(0.3)], "gru": [run(0.2), run(0.2)]}
    table = markdown_table(summarize(h), None, paired_differences(h))
    head = table.splitlines()[0]
    for col in ("trades / week", "exposure %", "skill p-value", "never traded"):
        assert col in head
    cnn_row = table.splitlines()[2]
    assert "| 2.00 ± 0.00" in cnn_row and "| 30.0 ± 0.0" in cnn_row and "| 0.500 ± 0.000" in cnn_row
    assert "20.00 ± 14.14 [10.00, 30.00]" in cnn_row
    assert "minus `cnn`" in table and "| gru | 0.00 ± 14.14" in table
    # Another reference (benchmarks/nstep.py pairs against n=1) is named as such.
    other = markdown_table(summarize(h), None, paired_differences(h), reference_name="n=1")
    assert "minus `n=1`" in other and "minus `cnn`" not in other


def test_learning_curves_are_over_gradient_updates(tmp_path: Path) -> None:
    pts = curve(run(0.3), "val_total_return", zero_if_flat=False)
    assert pts == {0: 0.01, 10: 0.15, 20: 0.3}  # imitation's end stands at update 0
    assert curve(flat(), "val_sharpe", zero_if_flat=True)[20] == 0.0
    plot_curves({"cnn": [run(0.1), run(0.3)], "gru": [flat()]}, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=12),
    st.floats(-1e3, 1e3, allow_nan=False),
)
def test_bootstrap_interval_invariants(values: list[float], shift: float) -> None:
    lo, hi = seedstats.bootstrap_ci(values)
    mean = float(np.mean(values))
    tol = 1e-9 * (1 + max(abs(v) for v in values))
    assert min(values) <= lo <= hi <= max(values)
    assert lo - tol <= mean <= hi + tol
    lo2, hi2 = seedstats.bootstrap_ci([v + shift for v in values])  # the same resamples
    assert lo2 == pytest.approx(lo + shift, abs=1e-6) and hi2 == pytest.approx(hi + shift, abs=1e-6)
    assert seedstats.sample_std(values) == pytest.approx(
        statistics.stdev(values), rel=1e-9, abs=1e-9
    )
    same = seedstats.paired(values, values)
    assert same["mean"] == 0 and same["std"] == 0 and same["ci95"] == (0.0, 0.0)


# Running a comparison end to end is a one-fold sweep: tests/test_sweep.py::test_compare_is_a_one_fold_sweep
