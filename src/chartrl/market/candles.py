"""The canonical candle frame every module exchanges.

Columns ``timestamp`` (candle open time, ``datetime64[ns, UTC]``), ``open``, ``high``, ``low``,
``close``, ``volume`` (float64), sorted ascending, unique timestamps, default RangeIndex.
"""

from __future__ import annotations

import pandas as pd

COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]


def empty_candles() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS})
    df["timestamp"] = pd.Series(dtype="datetime64[ns, UTC]")
    return df


def to_ms(ts: pd.Series | pd.Timestamp) -> pd.Series | int:
    """Epoch milliseconds of a UTC timestamp (or a column of them)."""
    if isinstance(ts, pd.Series):
        return (ts.astype("datetime64[ns, UTC]").astype("int64") // 1_000_000).astype("int64")
    return int(pd.Timestamp(ts).value // 1_000_000)


def from_ms(ms: pd.Series | list[int]) -> pd.Series:
    return pd.to_datetime(pd.Series(ms, dtype="int64"), unit="ms", utc=True).astype(
        "datetime64[ns, UTC]"
    )
