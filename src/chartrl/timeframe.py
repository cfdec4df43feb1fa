"""Candle timeframes as ccxt names them ('1m' ... '1M') and their length in seconds."""

from __future__ import annotations

import re

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000}
_PATTERN = re.compile(r"^(\d+)([mhdwM])$")


def timeframe_seconds(timeframe: str) -> int:
    """Length of one candle; raises ValueError naming the accepted forms."""
    m = _PATTERN.match(timeframe)
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"timeframe {timeframe!r} is not a ccxt timeframe; use e.g. 1m, 5m, 15m, 1h, 4h, 1d, 1w")
    return int(m.group(1)) * _UNITS[m.group(2)]


def timeframe_ms(timeframe: str) -> int:
    return timeframe_seconds(timeframe) * 1000


def periods_per_year(timeframe: str) -> float:
    """Candles per year (crypto trades 24/7, so 365 days), for annualising returns and Sharpe.

    Monthly candles are calendar months, twelve a year: the 30 days of ``timeframe_seconds`` are a
    spacing for fetching and gap checks, and would make 12.17 months a year.
    """
    seconds = timeframe_seconds(timeframe)
    if timeframe.endswith("M"):
        return 12.0 / int(timeframe[:-1])
    return 365.0 * 86400.0 / seconds
