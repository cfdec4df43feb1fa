"""Indicators: the ta values, their warm-up, and no lookahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chartrl.chart.indicators import (
    check_candles,
    compute_indicators,
    history_needed,
    indicator_columns,
    warmup,
)
from chartrl.chart.spec import ChartSpec
from chartrl.errors import DataError

SPECS = [
    ChartSpec(),
    ChartSpec(oscillator="macd", ma_periods=(7, 30, 50)),
    ChartSpec(oscillator="none", bollinger_period=None),
]


def _perturb_after(candles: pd.DataFrame, t: int, seed: int = 0) -> pd.DataFrame:
    """Every candle after t replaced by very different (still valid) candles."""
    rng = np.random.default_rng(seed)
    out = candles.copy()
    n = len(out) - t - 1
    close = out["close"].iloc[t] * np.exp(np.cumsum(rng.normal(0, 0.05, n)))
    out.loc[t + 1 :, "open"] = close * np.exp(rng.normal(0, 0.02, n))
    out.loc[t + 1 :, "close"] = close
    out.loc[t + 1 :, "high"] = np.maximum(out.loc[t + 1 :, "open"], close) * 1.03
    out.loc[t + 1 :, "low"] = np.minimum(out.loc[t + 1 :, "open"], close) * 0.97
    out.loc[t + 1 :, "volume"] = rng.lognormal(8, 1, n)
    return out


@pytest.mark.parametrize("spec", SPECS, ids=["rsi", "macd", "plain"])
def test_columns_and_warmup(candles: pd.DataFrame, spec: ChartSpec) -> None:
    ind = compute_indicators(candles, spec)
    assert list(ind.columns) == indicator_columns(spec)
    assert ind.index.equals(candles.index)
    defined = ind.notna().all(axis=1).to_numpy()
    # Undefined values stay NaN (no fillna) until exactly the documented warm-up, then all defined.
    assert not defined[: warmup(spec)].any()
    assert defined[warmup(spec) :].all()


def test_values_match_their_definitions(candles: pd.DataFrame) -> None:
    spec = ChartSpec()
    ind = compute_indicators(candles, spec)
    close = candles["close"]
    np.testing.assert_allclose(ind["sma_20"], close.rolling(20).mean(), rtol=1e-12, equal_nan=True)
    std = close.rolling(20).std(ddof=0)
    np.testing.assert_allclose(
        ind["bb_upper"], close.rolling(20).mean() + 2 * std, rtol=1e-12, equal_nan=True
    )
    # Wilder's RSI from scratch, seeded like ta (first difference counted as 0).
    d = close.diff().fillna(0.0).to_numpy()
    up, dn = np.maximum(d, 0), np.maximum(-d, 0)
    a = 1 / 14
    eu, ed = up[0], dn[0]
    rsi = np.empty(len(d))
    for i in range(len(d)):  # 0/0 in the warm-up rows is NaN, compared only from row 13
        if i:
            eu, ed = (1 - a) * eu + a * up[i], (1 - a) * ed + a * dn[i]
        with np.errstate(invalid="ignore", divide="ignore"):
            rsi[i] = 100 - 100 / (1 + eu / ed)
    np.testing.assert_allclose(ind["rsi"].to_numpy()[13:], rsi[13:], rtol=1e-9)
    assert ind["rsi"].dropna().between(0, 100).all()


@pytest.mark.parametrize("spec", SPECS, ids=["rsi", "macd", "plain"])
@pytest.mark.parametrize("t", [40, 700, 2998])
def test_no_lookahead(candles: pd.DataFrame, spec: ChartSpec, t: int) -> None:
    before = compute_indicators(candles, spec)
    after = compute_indicators(_perturb_after(candles, t), spec)
    assert not np.allclose(
        before.iloc[t + 1 :].fillna(0), after.iloc[t + 1 :].fillna(0)
    )  # the change is real
    # Bit-identical up to t (NaN where NaN).
    a, b = before.iloc[: t + 1].to_numpy(), after.iloc[: t + 1].to_numpy()
    assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("spec", SPECS[:2], ids=["rsi", "macd"])
def test_history_needed_makes_the_start_irrelevant(candles: pd.DataFrame, spec: ChartSpec) -> None:
    n = history_needed(spec)
    full = compute_indicators(candles, spec).iloc[-1]
    tail = compute_indicators(candles.iloc[-n:].reset_index(drop=True), spec).iloc[-1]
    np.testing.assert_allclose(tail.to_numpy(), full.to_numpy(), rtol=1e-5)
    # ... and with far less history the EWM seed does show (so the bound is not vacuous).
    short = compute_indicators(candles.iloc[-60:].reset_index(drop=True), spec).iloc[-1]
    assert not np.allclose(short.to_numpy(), full.to_numpy(), rtol=1e-7)


def test_bad_frames_are_refused(candles: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="lacks column"):
        compute_indicators(candles.drop(columns=["volume"]), ChartSpec())
    shuffled = candles.iloc[[0, 2, 1, 3]].reset_index(drop=True)
    with pytest.raises(DataError, match="row 2"):
        check_candles(shuffled)
