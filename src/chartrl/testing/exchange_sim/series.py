"""The emulator's candles and the price path inside each candle.

Only candles whose open time has come (by the emulator's clock) exist. Inside a candle the price
follows a fixed path through its four prices, so a candle still forming is consistent with the
finished one and resting orders fill where the path crosses them:
bullish (close >= open): open -> low -> high -> close; bearish: open -> high -> low -> close,
piecewise linear over thirds of the candle. The finished candle equals the input row exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chartrl.errors import DataError
from chartrl.timeframe import timeframe_ms

_REQUIRED = ["timestamp", "open", "high", "low", "close", "volume"]


class CandleSeries:
    """Immutable arrays of the candles plus queries "as of" a given time."""

    def __init__(self, candles: pd.DataFrame, timeframe: str) -> None:
        missing = [c for c in _REQUIRED if c not in candles.columns]
        if missing:
            raise DataError(
                f"exchange emulator candles lack column(s) {missing}; pass the canonical candle frame"
            )
        if len(candles) == 0:
            raise DataError("exchange emulator got no candles; pass at least one")
        ts = pd.to_datetime(candles["timestamp"], utc=True)
        ms = ts.astype("datetime64[ns, UTC]").astype("int64").to_numpy(dtype=np.int64) // 1_000_000
        if np.any(np.diff(ms) <= 0):
            raise DataError("exchange emulator candles must have ascending, unique timestamps")
        self.timeframe = timeframe
        self.tf_ms = timeframe_ms(timeframe)
        off_grid = np.diff(ms) % self.tf_ms != 0
        if off_grid.any():
            at = int(np.argmax(off_grid)) + 1
            raise DataError(
                f"exchange emulator candles are not {timeframe} apart (row {at}: {pd.Timestamp(int(ms[at]), unit='ms', tz='UTC')}); pass the timeframe of the data"
            )
        self.open_ms = ms
        self.o = candles["open"].to_numpy(dtype=float)
        self.h = candles["high"].to_numpy(dtype=float)
        self.l = candles["low"].to_numpy(dtype=float)
        self.c = candles["close"].to_numpy(dtype=float)
        self.v = candles["volume"].to_numpy(dtype=float)
        bad = ~(np.isfinite(self.o) & np.isfinite(self.c) & (self.l > 0) & (self.h >= self.l))
        if bad.any():
            raise DataError(
                f"exchange emulator candles have {int(bad.sum())} invalid row(s) (first at index {int(np.argmax(bad))}); validate them first"
            )

    def __len__(self) -> int:
        return len(self.open_ms)

    @property
    def first_ms(self) -> int:
        return int(self.open_ms[0])

    @property
    def last_ms(self) -> int:
        return int(self.open_ms[-1])

    def index_at(self, t_ms: int) -> int:
        """Index of the last candle opened at or before ``t_ms`` (-1 before the first)."""
        return int(np.searchsorted(self.open_ms, t_ms, side="right")) - 1

    def _points(self, i: int) -> tuple[list[float], list[float]]:
        o, hi, lo, c = self.o[i], self.h[i], self.l[i], self.c[i]
        mid = (lo, hi) if c >= o else (hi, lo)
        return [0.0, 1 / 3, 2 / 3, 1.0], [o, mid[0], mid[1], c]

    def _fraction(self, i: int, t_ms: int) -> float:
        return min(max((t_ms - int(self.open_ms[i])) / self.tf_ms, 0.0), 1.0)

    def path(self, i: int, t_ms: int) -> float:
        xs, ys = self._points(i)
        return float(np.interp(self._fraction(i, t_ms), xs, ys))

    def price_at(self, t_ms: int) -> float | None:
        """Last traded price at ``t_ms`` (None before the first candle opened)."""
        i = self.index_at(t_ms)
        return None if i < 0 else self.path(i, t_ms)

    def candle_as_of(self, i: int, now_ms: int) -> tuple[float, float, float, float, float, bool]:
        """(open, high, low, close, volume, closed) of candle ``i`` as seen at ``now_ms``."""
        f = self._fraction(i, now_ms)
        if f >= 1.0:
            return self.o[i], self.h[i], self.l[i], self.c[i], self.v[i], True
        xs, ys = self._points(i)
        seen = [y for x, y in zip(xs, ys, strict=True) if x <= f] + [float(np.interp(f, xs, ys))]
        return self.o[i], max(seen), min(seen), seen[-1], self.v[i] * f, False

    def extremes(self, t0_ms: int, t1_ms: int) -> tuple[float, float] | None:
        """(low, high) of the price path over [t0, t1] (None when no candle was open)."""
        if t1_ms < t0_ms:
            return None
        first = max(self.index_at(t0_ms), 0)
        last = self.index_at(t1_ms)
        if last < 0:
            return None
        values: list[float] = []
        for i in range(first, last + 1):
            start = int(self.open_ms[i])
            lo_t, hi_t = max(t0_ms, start), min(t1_ms, start + self.tf_ms)
            if hi_t < lo_t:
                continue
            xs, ys = self._points(i)
            f0, f1 = self._fraction(i, lo_t), self._fraction(i, hi_t)
            values += [float(np.interp(f0, xs, ys)), float(np.interp(f1, xs, ys))]
            values += [y for x, y in zip(xs, ys, strict=True) if f0 < x < f1]
        return (min(values), max(values)) if values else None
