"""Price sanity of incoming candles (invariant 9): a suspect print is quarantined, never traded.

The store's ``price_spike`` rule judges a candle by both its neighbours, so it cannot judge the
newest one, which is exactly the one the daemon trades on. Here each fetched candle is compared
with the last trusted close: beyond ``data.price_band`` (a fraction, in log terms either way) it
is suspect. A suspect candle followed by one that agrees with it is a real move and is kept; one
followed by a return to the trusted level is a bad print and is dropped; the newest one, with no
candle after it yet, is held apart: not stored, not traded on, and fetched and judged again at
the next tick (the store still ends before it). Marks, the day's start equity and the retrain
thus only ever see trusted prices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from chartrl.logs import get_logger

log = get_logger("chartrl.daemon.sanity")


@dataclass
class Screen:
    """``screen(frame)`` for :func:`chartrl.market.fetch.update_series`; ``held`` lists the open
    times (ms) of the candles it held apart in its last call."""

    reference: float | None
    """The last trusted close (the newest stored candle's); None: nothing to compare with."""
    band: float
    held: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)

    def _off(self, row: pd.Series, ref: float) -> bool:
        limit = math.log1p(self.band)
        return any(
            not (float(row[c]) > 0 and abs(math.log(float(row[c]) / ref)) <= limit)
            for c in ("open", "high", "low", "close")
        )

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.held, self.dropped = [], []
        if self.band <= 0 or frame.empty:
            return frame
        ref = self.reference
        keep = []
        rows = list(frame.iterrows())
        for i, (idx, row) in enumerate(rows):
            ms = int(pd.Timestamp(row["timestamp"]).value // 1_000_000)
            if ref is None or ref <= 0 or not self._off(row, ref):
                keep.append(idx)
                ref = float(row["close"])
                continue
            if i == len(rows) - 1:
                self.held.append(ms)
                log.warning(
                    "price_quarantined",
                    candle=pd.Timestamp(ms, unit="ms", tz="UTC").isoformat(),
                    close=float(row["close"]),
                    trusted_close=ref,
                    band=self.band,
                    action="not stored, not traded; judged again at the next fetch",
                )
                break
            nxt = rows[i + 1][1]
            if not self._off(nxt, float(row["close"])) and self._off(nxt, ref):
                keep.append(idx)  # the next candle confirms it: a real move
                ref = float(row["close"])
            else:
                self.dropped.append(ms)
                log.warning(
                    "price_dropped",
                    candle=pd.Timestamp(ms, unit="ms", tz="UTC").isoformat(),
                    close=float(row["close"]),
                    trusted_close=ref,
                    why="an isolated print outside data.price_band: the next candle returned",
                )
        return frame.loc[keep]
