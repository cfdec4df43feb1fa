"""Month partitions of a stored series: one Parquet file per calendar month (UTC).

Layout: the series head ``<timeframe>.parquet`` is a zero-row Parquet file that carries the
series metadata (``chartrl`` key, with ``"layout": "monthly"``), and the candles live in
``<timeframe>.months/YYYY-MM.parquet``. The month files are the truth for candles; the head is the
summary ``chartrl data`` and ``last_timestamp`` read without touching the candles. A head that
holds rows and no ``layout`` is a single-file store of an older chartrl: it is read as it is and
migrated to months by the next write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from chartrl.market.series import checked_meta, unreadable

LAYOUT = "monthly"


def months_dir(head: Path) -> Path:
    """``.../1h.parquet`` -> ``.../1h.months`` (not matched by the ``*.parquet`` series glob)."""
    return head.with_name(head.name.removesuffix(".parquet") + ".months")


def month_path(head: Path, key: str) -> Path:
    return months_dir(head) / f"{key}.parquet"


def is_monthly(meta: dict[str, Any]) -> bool:
    return meta.get("layout") == LAYOUT


def month_keys(ts: pd.Series) -> np.ndarray:
    """``YYYY-MM`` of each UTC timestamp."""
    return ts.dt.strftime("%Y-%m").to_numpy() if len(ts) else np.array([], dtype=object)


def month_slices(df: pd.DataFrame) -> dict[str, slice]:
    """Row ranges per month of a frame sorted by timestamp (vectorised: no per-row formatting)."""
    if df.empty:
        return {}
    ts = df["timestamp"]
    code = (ts.dt.year * 12 + ts.dt.month - 1).to_numpy()
    starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    ends = np.r_[starts[1:], len(code)]
    return {
        f"{code[s] // 12:04d}-{code[s] % 12 + 1:02d}": slice(int(s), int(e))
        for s, e in zip(starts, ends, strict=True)
    }


def month_files(head: Path) -> list[Path]:
    d = months_dir(head)
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("????-??.parquet") if p.is_file())


def read_months(head: Path, exchange: str, symbol: str, timeframe: str) -> pa.Table | None:
    """All month files concatenated in order (metadata dropped), or None when there are none."""
    tables = []
    for p in month_files(head):
        try:
            table = pq.read_table(p)
        except (OSError, pa.ArrowException) as exc:
            raise unreadable(p, exc) from None
        checked_meta(p, table.schema, exchange, symbol, timeframe)
        tables.append(table.replace_schema_metadata(None))
    if not tables:
        return None
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def month_key(ts: pd.Timestamp) -> str:
    return f"{ts.year:04d}-{ts.month:02d}"


def keys_around(lo: pd.Timestamp, hi: pd.Timestamp) -> set[str]:
    """The months from the one before ``lo``'s to the one after ``hi``'s (the batch and its neighbours)."""
    first = (lo.tz_convert("UTC").tz_localize(None).to_period("M") - 1).to_timestamp()
    last = (hi.tz_convert("UTC").tz_localize(None).to_period("M") + 1).to_timestamp()
    return {month_key(m) for m in pd.date_range(first, last, freq="MS")}


def split_months(
    head: Path, exchange: str, symbol: str, timeframe: str, keys: set[str]
) -> tuple[pa.Table | None, pd.Series]:
    """The month files in ``keys`` in full, and only the timestamps of the others (for the totals)."""
    inside = [p for p in month_files(head) if p.stem in keys]
    outside = [p for p in month_files(head) if p.stem not in keys]
    tables, stamps = [], []
    for p in inside:
        tables.append(_read_checked(p, exchange, symbol, timeframe, None))
    for p in outside:
        stamps.append(_read_checked(p, exchange, symbol, timeframe, ["timestamp"]))
    full = None
    if tables:
        full = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    ts = (
        pa.concat_tables(stamps).column("timestamp").to_pandas()
        if stamps
        else pd.Series([], dtype="datetime64[ns, UTC]")
    )
    return full, ts


def _read_checked(
    p: Path, exchange: str, symbol: str, timeframe: str, columns: list[str] | None
) -> pa.Table:
    try:
        schema = pq.read_schema(p)
        checked_meta(p, schema, exchange, symbol, timeframe)
        table = pq.read_table(p, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise unreadable(p, exc) from None
    return table.replace_schema_metadata(None)


@dataclass
class Stored:
    """What a write reads first: candles (all, or the months ``keys``) and the series metadata."""

    frame: pd.DataFrame
    meta: dict[str, Any]
    others: pd.Series | None = None  # timestamps of the months not read in full
    keys: set[str] | None = None  # the months ``frame`` holds in full; None: every month

    @property
    def total(self) -> int:
        return len(self.frame) + (0 if self.others is None else len(self.others))

    def all_stamps(self, merged: pd.DataFrame) -> pd.DataFrame:
        """Every timestamp of the series after the merge (months are disjoint: concat and sort)."""
        ts = pd.concat([self.others, merged["timestamp"]], ignore_index=True)
        return pd.DataFrame({"timestamp": ts.sort_values(kind="stable", ignore_index=True)})


def read_parquet_candles(path: Path) -> pd.DataFrame:
    """The rows of a Parquet file, or every month's when it is a month-partitioned store's head.

    For a caller handed a store file by path (``chartrl sim --csv .../1h.parquet``).
    """
    import json

    from chartrl.market.series import META_KEY

    raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
    meta = json.loads(raw) if raw else {}
    if is_monthly(meta) and month_files(path):
        return pd.concat([pd.read_parquet(p) for p in month_files(path)], ignore_index=True)
    return pd.read_parquet(path)
