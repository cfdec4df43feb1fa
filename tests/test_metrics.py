"""Every metric on a tiny series whose answers are worked out here, and the deflated Sharpe ratio
against the worked example of Bailey & Lopez de Prado (2014)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chartrl.account.fills import Fill
from chartrl.backtest.metrics import (
    compute_metrics,
    deflated_sharpe,
    expected_max_sharpe,
    max_drawdown,
    probabilistic_sharpe,
    round_trips,
)
from chartrl.timeframe import periods_per_year

# Equity 100 -> 110 -> 99 -> 118.8: returns +10 %, -10 %, +20 %.
EQUITY = np.array([100.0, 110.0, 99.0, 118.8])
POSITION = np.array([0.0, 1.0, 1.0, 0.0])
FILLS = [
    Fill(1, "buy", 100.0, 1.0, 0.10),  # cost 100.10
    Fill(2, "sell", 110.0, 1.0, 0.11),  # proceeds 109.89: +9.79
    Fill(3, "buy", 50.0, 2.0, 0.10),  # cost 100.10
    Fill(4, "sell", 45.0, 2.0, 0.09),  # proceeds 89.91: -10.19
]
PPY = 4.0  # pretend quarterly candles, so annualising multiplies by 2 = sqrt(4)


@pytest.fixture
def m() -> dict:
    return compute_metrics(EQUITY, POSITION, FILLS, PPY, start="a", end="b")


def test_returns_and_growth(m: dict) -> None:
    assert m["total_return"] == pytest.approx(0.188)
    # 3 quarters = 0.75 years: 1.188 ** (1 / 0.75) - 1
    assert m["cagr"] == pytest.approx(1.188 ** (4 / 3) - 1)
    assert m["cagr"] == pytest.approx(0.258216, abs=1e-6)
    assert m["final_equity"] == pytest.approx(118.8)
    assert m["candles"] == 4 and m["start"] == "a" and m["end"] == "b"


def test_sharpe_and_sortino(m: dict) -> None:
    # mean = 0.2 / 3 = 1/15; squared deviations (1/30)^2 + (1/6)^2 + (2/15)^2 = 42/900; var = 42/900/2 = 7/300.
    assert m["sharpe"] == pytest.approx((1 / 15) / math.sqrt(7 / 300) * 2)
    assert m["sharpe"] == pytest.approx(0.872872, abs=1e-6)
    # Downside deviation: sqrt((0 + 0.01 + 0) / 3).
    assert m["sortino"] == pytest.approx((1 / 15) / math.sqrt(0.01 / 3) * 2)
    assert m["sortino"] == pytest.approx(2.309401, abs=1e-6)


def test_drawdown_and_calmar(m: dict) -> None:
    assert m["max_drawdown"] == pytest.approx(0.1)  # 110 -> 99
    assert m["calmar"] == pytest.approx(0.258216 / 0.1, abs=1e-5)


def test_trade_statistics(m: dict) -> None:
    assert m["trades"] == 2
    assert m["win_rate"] == 0.5
    assert m["profit_factor"] == pytest.approx(9.79 / 10.19)
    assert m["expectancy"] == pytest.approx((9.79 / 100.10 - 10.19 / 100.10) / 2)
    assert m["fees_paid"] == pytest.approx(0.40)
    assert m["turnover"] == pytest.approx(100 + 110 + 100 + 90)
    assert m["exposure"] == pytest.approx(2 / 3)  # long after the fills at candles 1 and 2 of 3
    assert m["open_position_at_end"] is False


def test_exposure_counts_the_position_after_each_candles_fill() -> None:
    # Position after the fill at the open of candle k (k = 1..4; index 0 is the start): bought at
    # candle 1, sold at 2, bought again at 4. Held over candles 1 and 4: 2 of 4. (Pairing return
    # k with the position before candle k's fill would give candle 2 only: 1 of 4.)
    eq = np.array([100.0, 101.0, 102.0, 102.0, 103.0])
    assert compute_metrics(eq, np.array([0.0, 2.0, 0.0, 0.0, 1.0]), [], PPY)[
        "exposure"
    ] == pytest.approx(2 / 4)
    # Buy and hold, bought at the first fill: in the market over every candle (not 3 of 4).
    assert compute_metrics(eq, np.array([0.0, 1.0, 1.0, 1.0, 1.0]), [], PPY)["exposure"] == 1.0


def test_a_run_ending_long_is_no_trade_even_when_another_run_follows() -> None:
    # Two chained runs (walk-forward folds): the first ends long, the second starts flat and buys.
    first = [
        Fill(1, "buy", 100.0, 1.0, 0.10),
        Fill(2, "sell", 110.0, 1.0, 0.11),
        Fill(3, "buy", 120.0, 1.0, 0.12),
    ]
    second = [Fill(4, "buy", 50.0, 2.0, 0.10), Fill(5, "sell", 45.0, 2.0, 0.09)]
    assert round_trips(first + second) == round_trips(first) + round_trips(second)
    assert round_trips(first + second) == [
        pytest.approx((9.79, 9.79 / 100.10)),
        pytest.approx((-10.19, -10.19 / 100.10)),
    ]


def test_round_trips_ignore_an_open_position() -> None:
    trips = round_trips(FILLS[:3])
    assert trips == [pytest.approx((9.79, 9.79 / 100.10))]


def test_undefined_ratios_are_null_not_infinite() -> None:
    flat = compute_metrics(np.array([100.0, 100.0, 100.0]), np.zeros(3), [], PPY)
    assert flat["sharpe"] is None and flat["sortino"] is None and flat["calmar"] is None
    assert flat["profit_factor"] is None and flat["win_rate"] is None and flat["expectancy"] is None
    assert flat["trades"] == 0 and flat["max_drawdown"] == 0.0 and flat["total_return"] == 0.0
    # Only winners: the profit factor has no losses to divide by.
    up = compute_metrics(np.array([100.0, 110.0, 121.0]), np.array([0.0, 1.0, 0.0]), FILLS[:2], PPY)
    assert up["profit_factor"] is None and up["win_rate"] == 1.0 and up["sortino"] is None


def test_annualisation_follows_the_timeframe() -> None:
    eq = np.array([100.0, 101.0, 100.5, 102.0])
    hourly = compute_metrics(eq, np.zeros(4), [], periods_per_year("1h"))
    daily = compute_metrics(eq, np.zeros(4), [], periods_per_year("1d"))
    assert hourly["sharpe"] / daily["sharpe"] == pytest.approx(math.sqrt(24))
    assert daily["cagr"] == pytest.approx(1.02 ** (365 / 3) - 1)
    # Calendar months: twelve a year (not 365 / 30 = 12.17); three monthly returns are a quarter.
    assert periods_per_year("1M") == 12.0 and periods_per_year("3M") == 4.0
    monthly = compute_metrics(eq, np.zeros(4), [], periods_per_year("1M"))
    assert monthly["cagr"] == pytest.approx(1.02**4 - 1)
    assert monthly["sharpe"] / daily["sharpe"] == pytest.approx(math.sqrt(12 / 365))


def test_inferred_annualisation_of_monthly_candles_is_twelve() -> None:
    import pandas as pd

    from chartrl.backtest.walkforward import infer_periods_per_year

    months = pd.DataFrame(
        {"timestamp": pd.date_range("2021-01-01", periods=13, freq="MS", tz="UTC")}
    )
    assert infer_periods_per_year(months) == 12.0
    hours = pd.DataFrame({"timestamp": pd.date_range("2021-01-01", periods=5, freq="h", tz="UTC")})
    assert infer_periods_per_year(hours) == 8760.0


def test_max_drawdown_measures_from_the_running_peak() -> None:
    assert max_drawdown(np.array([100, 120, 60, 130, 65, 200])) == pytest.approx(0.5)
    assert max_drawdown(np.array([1.0, 2.0, 3.0])) == 0.0


def test_deflated_sharpe_matches_the_papers_example() -> None:
    # Bailey & Lopez de Prado (2014), section "A numerical example": annual SR 2.5 from 1250 daily
    # returns, skew -3, kurtosis 10, 100 trials whose annualised SRs have variance 1/2.
    sr = 2.5 / math.sqrt(250)
    sr0 = expected_max_sharpe(100, math.sqrt(0.5 / 250))
    assert sr0 == pytest.approx(0.1132, abs=2e-4)
    assert probabilistic_sharpe(sr, sr0, 1250, -3.0, 10.0) == pytest.approx(0.9004, abs=1e-3)


def test_deflated_sharpe_of_a_sample() -> None:
    r = np.array([0.1, -0.1, 0.2])
    d = deflated_sharpe(r, trials=1)
    # Population moments of the deviations (1/30, -1/6, 2/15): m2 = 7/450, m3 = -1/1350.
    assert d["skew"] == pytest.approx((-1 / 1350) / (7 / 450) ** 1.5)
    assert d["sharpe_per_period"] == pytest.approx((1 / 15) / math.sqrt(7 / 300))
    assert d["sr_benchmark"] == 0.0 and d["dsr"] == pytest.approx(
        d["psr"]
    )  # one trial: nothing to deflate
    more = deflated_sharpe(r, trials=50)
    assert more["dsr"] < d["dsr"]  # more configurations tried, less confidence in the best
    assert deflated_sharpe(np.zeros(10))["dsr"] is None
