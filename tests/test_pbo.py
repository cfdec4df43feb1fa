"""CSCV probability of backtest overfitting (experiments/pbo.py): worked examples by hand, an
overfit and an honest matrix, refusals, and properties (bounds, column-order invariance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from chartrl.errors import DataError
from chartrl.experiments.pbo import default_blocks, describe, pbo_folds, pbo_returns


def test_fold_matrix_worked_by_hand() -> None:
    # 4 folds (blocks) x 3 configurations A, B, C; a block set's metric is the mean of its folds,
    # so compare sums (both halves hold 2 folds).
    #   A = [2, 1, 8, 5], B = [7, 7, 5, 4], C = [5, 8, 8, 8]
    # IS folds | IS sums A,B,C | winner | OOS sums A,B,C | winner's OOS rank | w = rank/4 | logit
    #  {0,1}   |  3, 14, 13    |   B    |  13,  9, 16    |        1         |   0.25     | ln(1/3)
    #  {0,2}   | 10, 12, 13    |   C    |   6, 11, 16    |        3         |   0.75     | ln 3
    #  {0,3}   |  7, 11, 13    |   C    |   9, 12, 16    |        3         |   0.75     | ln 3
    #  {1,2}   |  9, 12, 16    |   C    |   7, 11, 13    |        3         |   0.75     | ln 3
    #  {1,3}   |  6, 11, 16    |   C    |  10, 12, 13    |        3         |   0.75     | ln 3
    #  {2,3}   | 13,  9, 16    |   C    |   3, 14, 13    |        2         |   0.50     | 0
    # PBO = #{logit <= 0} / 6 = 2/6 (the median rank, logit 0, counts as overfit).
    m = np.array([[2, 7, 5], [1, 7, 8], [8, 5, 8], [5, 4, 8]], dtype=float)
    res = pbo_folds(m)
    assert res.combinations == 6 and res.blocks == 4 and res.configs == 3
    assert res.pbo == pytest.approx(1 / 3)
    assert res.oos_rank.tolist() == [0.25, 0.75, 0.75, 0.75, 0.75, 0.5]
    assert res.logits == pytest.approx([math.log(1 / 3)] + [math.log(3)] * 4 + [0.0])
    # Degradation: the winner's IS mean (sum / 2) against its OOS mean.
    assert res.is_perf.tolist() == [7.0, 6.5, 6.5, 8.0, 8.0, 8.0]
    assert res.oos_perf.tolist() == [4.5, 8.0, 8.0, 6.5, 6.5, 6.5]
    assert res.prob_oos_loss == 0.0
    assert describe(res).startswith("PBO 0.33 from 6 combinations (4 blocks, 3 configurations)")


def test_returns_sharpe_worked_by_hand() -> None:
    # 4 periods, 2 blocks of 2, configurations X and Y; Sharpe = mean / sample std (ddof=1).
    #   X: block 0 = [0.01, 0.03] -> mean 0.02, sd 0.01*sqrt(2) -> 1.4142
    #      block 1 = [-0.01, 0.01] -> mean 0 -> 0
    #   Y: block 0 = [0.00, 0.02] -> mean 0.01, sd 0.01*sqrt(2) -> 0.7071
    #      block 1 = [0.01, 0.02] -> mean 0.015, sd 0.005*sqrt(2) -> 2.1213
    # IS {0}: X wins (1.41 > 0.71); OOS: X 0 < Y 2.12 -> rank 1, w = 1/3, logit ln(1/2)
    # IS {1}: Y wins (2.12 > 0);    OOS: Y 0.71 < X 1.41 -> rank 1, logit ln(1/2)
    # PBO = 2/2 = 1.
    x = np.array([[0.01, 0.0], [0.03, 0.02], [-0.01, 0.01], [0.01, 0.02]])
    res = pbo_returns(x, blocks=2)
    assert res.pbo == 1.0 and res.metric == "sharpe"
    assert res.logits == pytest.approx([math.log(0.5)] * 2)
    assert res.is_perf == pytest.approx([math.sqrt(2), 1.5 * math.sqrt(2)])
    assert res.oos_perf == pytest.approx([0.0, math.sqrt(0.5)])


def test_overfit_matrix_gives_pbo_near_one() -> None:
    # Noise configurations, each column demeaned: a configuration's gain in the IS half is
    # exactly its loss in the OOS half, so the IS winner (chosen by noise) is the OOS loser.
    rng = np.random.default_rng(7)
    r = rng.normal(0.0, 0.01, size=(320, 12))
    r -= r.mean(axis=0)
    res = pbo_returns(r, blocks=8)
    assert res.pbo >= 0.95
    assert float(np.mean(res.oos_perf)) < 0 < float(np.mean(res.is_perf))
    slope, _ = res.degradation
    assert slope < 0
    # The fold-level form sees the same trap.
    folds = rng.normal(size=(6, 8))
    assert pbo_folds(folds - folds.mean(axis=0)).pbo == 1.0


def test_honest_matrix_gives_pbo_near_zero() -> None:
    # One configuration truly better (+1 sd a period) among noise: it wins IS and stays top OOS.
    rng = np.random.default_rng(7)
    r = rng.normal(0.0, 0.01, size=(320, 12))
    r[:, 5] += 0.01
    res = pbo_returns(r, blocks=8)
    assert res.pbo <= 0.05
    assert float(np.mean(res.oos_rank)) > 0.9


def test_tied_winners_average_their_ranks() -> None:
    # Two identical columns. IS {fold 0} = [1, 1, 0]: both tie for the win; OOS [2, 2, 3]: they
    # share ranks 1 and 2, so each has rank 1.5, w = 1.5/4. IS {fold 1} = [2, 2, 3]: the third
    # wins; OOS [1, 1, 0]: rank 1, w = 1/4. Averaging tied winners keeps the answer independent
    # of which column comes first.
    m = np.array([[1.0, 1.0, 0.0], [2.0, 2.0, 3.0]])
    res = pbo_folds(m)
    assert res.oos_rank.tolist() == [0.375, 0.25]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pbo_folds(np.ones((4, 1))), "at least 2 configurations"),
        (lambda: pbo_folds(np.ones((1, 3))), "at least 2 blocks"),
        (lambda: pbo_folds(np.ones((3, 3))), "even number of blocks"),
        (lambda: pbo_returns(np.ones((40, 3)), blocks=5), "even number of blocks"),
        (lambda: pbo_returns(np.ones((10, 3))), "at least 20 periods"),
        (lambda: pbo_folds(np.array([[1.0, np.nan], [2.0, 3.0]])), "1 missing"),
        (lambda: pbo_returns(np.ones(10)), "2-D"),
        (lambda: pbo_folds(np.ones((18, 3))), "at most 16 blocks"),
    ],
)
def test_too_small_or_bad_inputs_are_refused_in_one_line(call, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


def test_default_blocks() -> None:
    assert default_blocks(10_000) == 16
    assert default_blocks(75) == 6  # 7 blocks of 10 fit; the even count below
    assert default_blocks(19) == 0


# Coarse values: ties (equal columns, flat blocks) come up often, the hard case for order.
finite = st.integers(-50, 50).map(lambda k: k / 1000)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(4, 12), st.integers(2, 6)), elements=finite),
    st.sampled_from([2, 4]),
    st.randoms(use_true_random=False),
)
def test_pbo_bounded_and_invariant_to_configuration_order(m, blocks, rnd) -> None:
    perm = list(range(m.shape[1]))
    rnd.shuffle(perm)
    rows = min(len(m) - len(m) % 2, 8)  # the fold form takes each row as a block: an even count
    for fn in (lambda a: pbo_returns(a, blocks=blocks), lambda a: pbo_folds(a[:rows])):
        a, b = fn(m), fn(m[:, perm])
        assert 0.0 <= a.pbo <= 1.0
        assert np.all((a.oos_rank > 0) & (a.oos_rank < 1))
        assert a.pbo == b.pbo
        assert a.logits.tolist() == b.logits.tolist()
