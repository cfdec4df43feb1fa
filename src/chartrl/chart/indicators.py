"""Indicators the chart draws, computed once over the whole series with the ``ta`` library.

Every indicator is causal: its value at candle t is a function of candles <= t only (rolling
windows end at t, ``ta``'s EWMs run with ``adjust=False`` forwards). ``fillna`` stays False on
purpose: ``ta``'s fill replaces the warm-up NaNs with made-up values, which would let a chart draw
an indicator that does not exist yet. Undefined values stay NaN, and the renderer excludes every
window that contains one (see ``TensorRenderer.valid_indices``) rather than drawing them.

EWM-based indicators (RSI, MACD) depend, in theory, on the whole history through their seed; the
seed's weight decays as (1 - alpha)^n, below 1e-6 after ~190 candles for RSI(14) and MACD(12,26,9).
``history_needed(spec)`` is how many candles a caller (the live daemon) should pass so its last
chart equals the backtest's chart of the same candle.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from chartrl.chart.spec import ChartSpec
from chartrl.errors import DataError

MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
_REQUIRED = ("open", "high", "low", "close", "volume")


def ma_column(period: int) -> str:
    return f"sma_{period}"


def indicator_columns(spec: ChartSpec) -> list[str]:
    """The columns ``compute_indicators`` returns for ``spec``, in a fixed order."""
    cols = [ma_column(p) for p in spec.ma_periods]
    if spec.bollinger_period is not None:
        cols += ["bb_upper", "bb_middle", "bb_lower"]
    if spec.oscillator == "rsi":
        cols.append("rsi")
    elif spec.oscillator == "macd":
        cols += ["macd", "macd_signal", "macd_hist"]
    return cols


def warmup(spec: ChartSpec) -> int:
    """Leading candles whose indicators are (at most) undefined: the first defined index."""
    needs = [p - 1 for p in spec.ma_periods]
    if spec.bollinger_period is not None:
        needs.append(spec.bollinger_period - 1)
    if spec.oscillator == "rsi":
        # ta turns the first (undefined) close difference into 0, so RSI(n) is defined from n - 1.
        needs.append(spec.rsi_period - 1)
    elif spec.oscillator == "macd":
        needs.append(MACD_SLOW - 1 + MACD_SIGNAL - 1)
    return max(needs, default=0)


def history_needed(spec: ChartSpec, tolerance: float = 1e-6) -> int:
    """Candles to pass so the last chart no longer depends on where the series starts.

    Rolling indicators only need their period; an EWM's seed weight decays as (1 - alpha)^n, so
    ``n = log(tolerance) / log(1 - alpha)`` more candles make it negligible.
    """
    settle = 0
    if spec.oscillator == "rsi":
        settle = math.ceil(math.log(tolerance) / math.log(1 - 1 / spec.rsi_period))
    elif spec.oscillator == "macd":
        settle = math.ceil(math.log(tolerance) / math.log(1 - 2 / (MACD_SLOW + 1))) + MACD_SIGNAL
    return spec.window + warmup(spec) + settle


def check_candles(candles: pd.DataFrame) -> None:
    """Refuse a frame the chart cannot be drawn from, naming the column."""
    missing = [c for c in _REQUIRED if c not in candles.columns]
    if missing:
        raise DataError(
            f"candle frame lacks column(s) {', '.join(missing)}; pass the canonical frame (chartrl.market.candles)"
        )
    if len(candles) and "timestamp" in candles.columns:
        ts = candles["timestamp"]
        if not ts.is_monotonic_increasing or ts.duplicated().any():
            bad = int(np.argmax(~(ts.diff().iloc[1:] > pd.Timedelta(0)).to_numpy())) + 1
            raise DataError(
                f"candle timestamps must be ascending and unique; row {bad} ({ts.iloc[bad]}) is not"
            )


def compute_indicators(candles: pd.DataFrame, spec: ChartSpec) -> pd.DataFrame:
    """The indicators ``spec`` draws, one row per candle (same index), NaN where undefined."""
    import ta

    check_candles(candles)
    close = candles["close"].astype("float64")
    out: dict[str, pd.Series] = {}
    for p in spec.ma_periods:
        out[ma_column(p)] = ta.trend.SMAIndicator(close, window=p, fillna=False).sma_indicator()
    if spec.bollinger_period is not None:
        bb = ta.volatility.BollingerBands(
            close, window=spec.bollinger_period, window_dev=spec.bollinger_std, fillna=False
        )
        out["bb_upper"] = bb.bollinger_hband()
        out["bb_middle"] = bb.bollinger_mavg()
        out["bb_lower"] = bb.bollinger_lband()
    if spec.oscillator == "rsi":
        out["rsi"] = ta.momentum.RSIIndicator(close, window=spec.rsi_period, fillna=False).rsi()
    elif spec.oscillator == "macd":
        m = ta.trend.MACD(
            close,
            window_slow=MACD_SLOW,
            window_fast=MACD_FAST,
            window_sign=MACD_SIGNAL,
            fillna=False,
        )
        out["macd"] = m.macd()
        out["macd_signal"] = m.macd_signal()
        out["macd_hist"] = m.macd_diff()
    frame = pd.DataFrame(out, index=candles.index, columns=indicator_columns(spec), dtype="float64")
    # ta's RSI maps a NaN average loss to NaN but a 0/0 (flat prices) to 100; keep infinities out.
    return frame.replace([np.inf, -np.inf], np.nan)
