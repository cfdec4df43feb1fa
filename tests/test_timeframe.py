"""Calendar timeframes: weekly candles open on Mondays, monthly ones on the 1st and last 28 to 31
days. Fetching, gap counts and the daemon's candle arithmetic follow the calendar, not 30 days."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chartrl.config import load_settings
from chartrl.market.fetch import update_series
from chartrl.market.store import CandleStore
from chartrl.market.validate import find_gaps, infer_timeframe
from chartrl.timeframe import (
    candle_close_ms,
    candle_open_ms,
    candles_between,
    last_closed_open_ms,
    shift_open_ms,
)


def ms(when: str) -> int:
    return int(pd.Timestamp(when, tz="UTC").value // 1_000_000)


def test_months_are_calendar_months() -> None:
    assert candle_close_ms(ms("2024-01-01"), "1M") == ms("2024-02-01")  # 31 days
    assert candle_close_ms(ms("2024-02-01"), "1M") == ms("2024-03-01")  # 29 days (leap year)
    assert candle_close_ms(ms("2023-02-01"), "1M") == ms("2023-03-01")  # 28 days
    assert shift_open_ms(ms("2024-03-01"), "1M", -14) == ms("2023-01-01")
    assert candle_open_ms(ms("2024-03-31 23:59"), "1M") == ms("2024-03-01")
    assert last_closed_open_ms(ms("2024-03-01 00:00:01"), "1M") == ms("2024-02-01")
    assert last_closed_open_ms(ms("2024-02-29 23:59"), "1M") == ms(
        "2024-01-01"
    )  # February still open
    assert (
        candles_between(ms("2023-02-01"), ms("2023-05-01"), "1M") == 3
    )  # 89 days: 2 by 30-day steps


def test_weeks_open_on_mondays_and_days_on_the_epoch() -> None:
    # 2024-03-18 is a Monday; an epoch-aligned week would open on a Thursday.
    assert last_closed_open_ms(ms("2024-03-18 00:00:10"), "1w") == ms("2024-03-11")
    assert candle_open_ms(ms("2024-03-17 23:00"), "1w") == ms("2024-03-11")
    assert last_closed_open_ms(ms("2024-03-15 13:30"), "1h") == ms("2024-03-15 12:00")
    assert last_closed_open_ms(ms("2024-03-15 13:30"), "4h") == ms("2024-03-15 08:00")
    assert candles_between(ms("2024-03-15 08:00"), ms("2024-03-15 13:00"), "1h") == 5


def _monthly(first: str, last: str) -> pd.Series:
    return pd.Series(pd.date_range(first, last, freq="MS", tz="UTC"))


def test_gaps_and_inferred_timeframe_of_monthly_candles() -> None:
    year = _monthly("2023-01-01", "2023-12-01")
    assert infer_timeframe(year) == "1M" and find_gaps(year, "1M").count == 0
    holed = year[~year.dt.month.isin([3, 4])].reset_index(drop=True)  # February to May: 89 days
    gaps = find_gaps(holed, "1M")
    assert (gaps.count, gaps.missing) == (1, 2)


class _MonthlyExchange:
    """Just what ``update_series`` asks of a ccxt exchange, serving monthly candles two a page."""

    id = "binance"
    has: dict = {}
    precisionMode = 4
    features = {"spot": {"fetchOHLCV": {"limit": 2}}}
    markets = {
        "BTC/USDT": {
            "symbol": "BTC/USDT",
            "taker": 0.001,
            "precision": {"amount": 1e-05},
            "limits": {},
        }
    }

    def __init__(self, opens: pd.Series) -> None:
        self.rows = [[ms(str(t)), 100.0, 101.0, 99.0, 100.0, 1.0] for t in opens]
        self.since: list[int] = []

    def fetch_ohlcv(self, symbol: str, timeframe: str, since: int, limit: int) -> list[list[float]]:
        self.since.append(since)
        return [r for r in self.rows if r[0] >= since][:limit]


def test_monthly_fetch_continues_after_february_and_never_stores_the_open_month(
    tmp_path: Path,
) -> None:
    s = load_settings(
        None,
        env={},
        overrides={
            "market": {"timeframe": "1M", "since": "2023-06-15"},
            "data": {"dir": str(tmp_path / "data")},
        },
    )
    ex = _MonthlyExchange(_monthly("2023-06-01", "2024-06-01"))
    store = CandleStore(s.data_dir)

    def stored() -> list[str]:
        return [f"{t:%Y-%m}" for t in store.load("binance", "BTC/USDT", "1M")["timestamp"]]

    # 31 January, noon: January's candle is still open (30 days after its open is not its close).
    update_series(
        s, progress=False, exchange=ex, store=store, now_ms=lambda: ms("2024-01-31 12:00")
    )
    assert ex.since[0] == ms("2023-06-01")  # market.since aligned to its month
    assert stored()[0] == "2023-06" and stored()[-1] == "2023-12"
    # 1 March: February (29 days) has closed; from there, March is the next candle, not 2 March.
    update_series(
        s, progress=False, exchange=ex, store=store, now_ms=lambda: ms("2024-03-01 00:00:01")
    )
    assert stored()[-2:] == ["2024-01", "2024-02"]
    ex.since.clear()
    update_series(
        s, progress=False, exchange=ex, store=store, now_ms=lambda: ms("2024-05-01 00:00:01")
    )
    assert ex.since[0] == ms("2024-03-01")
    assert stored()[-2:] == ["2024-03", "2024-04"] and len(stored()) == 11
    assert store.summary("binance", "BTC/USDT", "1M").gaps.count == 0


@pytest.mark.parametrize("timeframe", ["1w", "1M"])
def test_tick_trigger_and_tick_target_agree(timeframe: str) -> None:
    """The daemon fires just after a weekly/monthly close; the candle it decides on is the one that closed."""
    from chartrl.daemon.triggers import tick_trigger

    fire = tick_trigger(timeframe, 10).get_next_fire_time(
        None, pd.Timestamp("2024-03-13 12:00", tz="UTC").to_pydatetime()
    )
    now = int(fire.timestamp() * 1000)
    target = last_closed_open_ms(now, timeframe)
    assert candle_close_ms(target, timeframe) == now - 10_000


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["1m", "15m", "1h", "4h", "1d", "1w", "1M", "3M"]),
    st.lists(st.integers(0, 4_000_000_000_000), min_size=1, max_size=40),
    st.integers(-30, 30),
)
def test_shifting_an_array_is_shifting_each_open(timeframe: str, times: list[int], n: int) -> None:
    # The console rebuilds a year of equity with one array call: it must be the scalar arithmetic.
    opens = [candle_open_ms(t, timeframe) for t in times]
    shifted = shift_open_ms(np.asarray(opens, dtype=np.int64), timeframe, n)
    assert shifted.tolist() == [shift_open_ms(o, timeframe, n) for o in opens]
    assert candle_close_ms(np.asarray(opens), timeframe).tolist() == [
        candle_close_ms(o, timeframe) for o in opens
    ]
