"""The equity plot's downsampling keeps what a screen would show: each bucket's low and high."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from chartrl.backtest.metrics import drawdown_series
from chartrl.console.downsample import envelope_indices

values = st.floats(1.0, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 600).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=values), arrays(np.float64, n, elements=values)
        )
    ),
    st.integers(8, 700),
)
def test_every_bucket_keeps_each_line_s_low_and_high(pair, points):
    equity, hold = pair
    dd = drawdown_series(equity)
    keep = envelope_indices([equity, hold, dd], points)
    n = len(equity)
    assert len(keep) <= points
    assert np.all(np.diff(keep) > 0) and keep[0] == 0 and keep[-1] == n - 1
    if n <= points:
        assert keep.tolist() == list(range(n))
        return
    # The deepest drawdown, and every line's global extremes, are drawn.
    for line in (equity, hold, dd):
        assert line[keep].min() == line.min() and line[keep].max() == line.max()
    # No stretch between two kept points hides an excursion wider than what a bucket keeps: for
    # any run of points the kept ones bracket, the run's extremes are within the next bucket's.
    width = -(-n // ((points - 2) // 6))
    for start in range(0, n, width):
        block = slice(start, start + width)
        inside = keep[(keep >= start) & (keep < start + width)]
        for line in (equity, hold, dd):
            assert line[inside].min() == line[block].min()
            assert line[inside].max() == line[block].max()


def test_a_flat_line_with_one_crash_keeps_the_crash():
    equity = np.full(8760, 100.0)
    equity[5000] = 40.0  # one hour's crash in a year
    keep = envelope_indices([equity, drawdown_series(equity)], 200)
    assert 5000 in keep and len(keep) <= 200


def test_refusals():
    with pytest.raises(ValueError, match="different lengths"):
        envelope_indices([np.ones(10), np.ones(9)], 8)
    with pytest.raises(ValueError, match="fewer than one bucket"):
        envelope_indices([np.ones(100)] * 3, 7)
    assert envelope_indices([], 8).tolist() == []
