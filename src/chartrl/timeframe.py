"""Candle timeframes as ccxt names them ('1m' ... '1M'): their length, and where candles open.

Minutes, hours and days have a fixed length and open on multiples of it since the epoch. Weeks
are seven days but open on Mondays (the epoch was a Thursday). Months are calendar months (28 to
31 days) opening on the 1st: ``timeframe_seconds`` gives them a nominal 30 days, good for rough
sizes (a progress bar, a tolerance), never for the next candle's open time, which is what
``candle_close_ms`` / ``shift_open_ms`` are for.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000}
_PATTERN = re.compile(r"^(\d+)([mhdwM])$")
_DAY_MS = 86_400_000
_MONDAY_MS = 4 * _DAY_MS
"""1970-01-05, the first Monday after the epoch: where weekly candles line up."""


def timeframe_seconds(timeframe: str) -> int:
    """Length of one candle (months: a nominal 30 days); raises ValueError naming the accepted forms."""
    m = _PATTERN.match(timeframe)
    if not m or int(m.group(1)) == 0:
        raise ValueError(
            f"timeframe {timeframe!r} is not a ccxt timeframe; use e.g. 1m, 5m, 15m, 1h, 4h, 1d, 1w"
        )
    return int(m.group(1)) * _UNITS[m.group(2)]


def timeframe_ms(timeframe: str) -> int:
    return timeframe_seconds(timeframe) * 1000


def _months(timeframe: str) -> int:
    """Calendar months per candle; 0 for a fixed-length timeframe."""
    timeframe_seconds(timeframe)  # refuses a malformed one
    return int(timeframe[:-1]) if timeframe.endswith("M") else 0


def _month_index(ms: Any) -> Any:
    """Months since January 1970 of epoch-ms ``ms`` (a number or an array)."""
    return (
        np.asarray(ms, dtype="int64")
        .astype("datetime64[ms]")
        .astype("datetime64[M]")
        .astype("int64")
    )


def _month_start_ms(index: Any) -> Any:
    return (
        np.asarray(index, dtype="int64")
        .astype("datetime64[M]")
        .astype("datetime64[ms]")
        .astype("int64")
    )


def candle_open_ms(ts_ms: int, timeframe: str) -> int:
    """Open time of the candle holding ``ts_ms``: epoch multiples up to a day, Mondays for 1w, the
    1st for months. Other timeframes (3d, 2w) align differently per exchange: ``ts_ms`` itself is
    returned, the latest time such a candle could have opened."""
    months = _months(timeframe)
    if months:
        return int(_month_start_ms(_month_index(ts_ms) // months * months))
    step = timeframe_ms(timeframe)
    if _DAY_MS % step == 0:
        return ts_ms - ts_ms % step
    if timeframe == "1w":
        return ts_ms - (ts_ms - _MONDAY_MS) % step
    return ts_ms


def shift_open_ms(open_ms: Any, timeframe: str, n: int) -> Any:
    """The open time ``n`` candles after (``n`` < 0: before) the candle opened at ``open_ms`` (an
    int, or an int64 array: a year of hourly candles at once, not 8,760 calls)."""
    months = _months(timeframe)
    if months:
        index = _month_index(open_ms)
        into = np.asarray(open_ms, dtype="int64") - _month_start_ms(index)  # 0 on the 1st
        out = _month_start_ms(index + n * months) + into
    else:
        out = np.asarray(open_ms, dtype="int64") + n * timeframe_ms(timeframe)
    return int(out) if np.ndim(out) == 0 else out


def candle_close_ms(open_ms: Any, timeframe: str) -> Any:
    """When the candle opened at ``open_ms`` (an int or an array) closes: the next candle's open."""
    return shift_open_ms(open_ms, timeframe, 1)


def last_closed_open_ms(now_ms: int, timeframe: str) -> int:
    """Open time of the newest candle that has closed at ``now_ms`` (for a timeframe without a
    known alignment, the latest time it could have opened)."""
    return shift_open_ms(candle_open_ms(now_ms, timeframe), timeframe, -1)


def candles_between(from_ms: Any, to_ms: Any, timeframe: str) -> Any:
    """How many candles on from the one opened at ``from_ms`` the one opened at ``to_ms`` is
    (1 = the next one); numbers or arrays."""
    months = _months(timeframe)
    if months:
        n = (_month_index(to_ms) - _month_index(from_ms)) // months
    else:
        n = (np.asarray(to_ms, dtype="int64") - np.asarray(from_ms, dtype="int64")) // timeframe_ms(
            timeframe
        )
    return int(n) if np.ndim(n) == 0 else n


def periods_per_year(timeframe: str) -> float:
    """Candles per year (crypto trades 24/7, so 365 days), for annualising returns and Sharpe.

    Monthly candles are calendar months, twelve a year (not the 12.17 of a nominal 30 days).
    """
    months = _months(timeframe)
    if months:
        return 12.0 / months
    return 365.0 * 86400.0 / timeframe_seconds(timeframe)
