"""What a stored candle file carries besides candles, and the checks that it is the file asked for.

Per-series metadata (count, first/last, sources, repairs per rule, gaps) rides in the Parquet
key-value metadata under ``chartrl`` so ``chartrl data`` can report it from the footer alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from chartrl.errors import DataError
from chartrl.market.candles import COLUMNS
from chartrl.market.validate import GapReport, ValidationReport, find_gaps

META_KEY = b"chartrl"
FORMAT_VERSION = 1


@dataclass
class SeriesSummary:
    """One stored series as ``chartrl data`` shows it; a merge also says what it changed."""

    exchange: str
    symbol: str
    timeframe: str
    path: Path
    count: int = 0
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    gaps: GapReport = field(default_factory=GapReport)
    repairs: dict[str, int] = field(default_factory=dict)  # cumulative, per rule
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    added: int = 0  # set by merge: new candles
    replaced: int = 0  # set by merge: stored candles whose values the new source changed
    report: ValidationReport | None = None  # set by ingest: what validation did to the batch
    error: str | None = None  # set by list_series when the file cannot be used

    @property
    def series(self) -> str:
        return f"{self.exchange} {self.symbol} {self.timeframe}"


def safe_name(part: str) -> str:
    """An exchange id, symbol or timeframe as one path component (BTC/USDT -> BTC-USDT)."""
    return part.replace("/", "-").replace(":", "_").replace(os.sep, "_")


def summary_from_meta(
    path: Path, meta: dict[str, Any], exchange: str, symbol: str, timeframe: str
) -> SeriesSummary:
    return SeriesSummary(
        exchange=meta.get("exchange", exchange),
        symbol=meta.get("symbol", symbol),
        timeframe=meta.get("timeframe", timeframe),
        path=path,
        count=int(meta.get("count", 0)),
        first=pd.Timestamp(meta["first"]) if meta.get("first") else None,
        last=pd.Timestamp(meta["last"]) if meta.get("last") else None,
        gaps=GapReport.from_dict(meta.get("gaps")),
        repairs=dict(meta.get("repairs", {})),
        sources=dict(meta.get("sources", {})),
    )


def updated_meta(
    meta: dict[str, Any],
    exchange: str,
    symbol: str,
    timeframe: str,
    merged: pd.DataFrame,
    report: ValidationReport,
    added: int,
    replaced: int,
) -> dict[str, Any]:
    """The metadata after a merge: totals recomputed from ``merged``, the batch's repairs and source added."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    repairs = dict(meta.get("repairs", {}))
    for rule, n in report.counts().items():
        repairs[rule] = repairs.get(rule, 0) + n
    sources = dict(meta.get("sources", {}))
    # Aggregated per source name: the daemon merges every candle, a list would grow forever.
    s = dict(
        sources.get(
            report.source, {"merges": 0, "rows_in": 0, "added": 0, "replaced": 0, "first_at": now}
        )
    )
    s.update(
        merges=s["merges"] + 1,
        rows_in=s["rows_in"] + report.rows_in,
        added=s["added"] + added,
        replaced=s["replaced"] + replaced,
        last_at=now,
    )
    sources[report.source] = s
    return {
        "version": FORMAT_VERSION,
        "exchange": exchange,
        "symbol": symbol,
        "timeframe": timeframe,
        "count": len(merged),
        "first": merged["timestamp"].iloc[0].isoformat() if len(merged) else None,
        "last": merged["timestamp"].iloc[-1].isoformat() if len(merged) else None,
        "gaps": find_gaps(merged["timestamp"], timeframe).to_dict(),
        "repairs": repairs,
        "sources": sources,
        "updated_at": now,
    }


def unreadable(path: Path, exc: BaseException | str) -> DataError:
    reason = (
        exc if isinstance(exc, str) else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    )
    return DataError(
        f"{path} is unreadable ({reason}); move it aside and run `chartrl fetch` or `chartrl import` again"
    )


def checked_meta(
    path: Path, schema: pa.Schema, exchange: str, symbol: str, timeframe: str
) -> dict[str, Any]:
    """The file's chartrl metadata, after refusing a file that is not a candle file of this series.

    Checked on the footer, so `chartrl data` flags a foreign Parquet file instead of listing it as
    healthy, and a load or merge refuses it before pandas fails on a missing column.
    """
    missing = [c for c in COLUMNS if c not in schema.names]
    mistyped = [
        c for c in COLUMNS if c in schema.names and not _column_type_ok(c, schema.field(c).type)
    ]
    if missing or mistyped:
        what = (
            f"no column {', '.join(missing)}"
            if missing
            else f"column {', '.join(mistyped)} of the wrong type"
        )
        raise unreadable(path, f"not a candle file: {what}")
    try:
        raw = (schema.metadata or {}).get(META_KEY)
        meta = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise unreadable(path, f"corrupt chartrl metadata: {exc}") from None
    _check_series(path, meta, exchange, symbol, timeframe)
    return meta


def _column_type_ok(name: str, type_: pa.DataType) -> bool:
    return (
        pa.types.is_timestamp(type_)
        if name == "timestamp"
        else pa.types.is_floating(type_) or pa.types.is_integer(type_)
    )


def _check_series(
    path: Path, meta: dict[str, Any], exchange: str, symbol: str, timeframe: str
) -> None:
    """Refuse a file whose metadata names another series: it was copied or moved to the wrong place."""
    held = tuple(meta.get(k) for k in ("exchange", "symbol", "timeframe"))
    if not all(held) or tuple(map(safe_name, held)) == tuple(
        map(safe_name, (exchange, symbol, timeframe))
    ):
        return
    raise DataError(
        f"{path} holds {' '.join(held)} candles, not {exchange} {symbol} {timeframe} (a copied or moved file?); "
        "move it aside, then fetch or import this series again"
    )
