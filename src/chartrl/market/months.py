"""Month partitions of a stored series: one Parquet file per calendar month (UTC).

Layout: the series head ``<timeframe>.parquet`` is a zero-row Parquet file that carries the
series metadata (``chartrl`` key, with ``"layout": "monthly"``), and the candles live in
``<timeframe>.months/YYYY-MM.parquet``. The month files are the truth for candles; the head is the
summary ``chartrl data`` and ``last_timestamp`` read without touching the candles. A head that
holds rows and no ``layout`` is a single-file store of an older chartrl: it is read as it is and
migrated to months by the next write.
"""

from __future__ import annotations

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
