"""The Parquet candle store: one file per calendar month per exchange/symbol/timeframe, written atomically.

Layout: ``<data dir>/candles/<exchange>/<BASE-QUOTE>/<timeframe>.parquet`` is the series head (no
rows; the series metadata) and ``<timeframe>.months/YYYY-MM.parquet`` hold the candles (see
``months``). Timestamps are UTC. A merge rewrites only the month files whose candles it adds or
changes, then the head; each file goes to a temporary file in the same directory, is fsynced, then
``os.replace``d over the old one (and the directory fsynced), so a crash at any moment leaves every
file old or new, never torn. A lock file serialises concurrent writers (daemon tick and a manual
fetch). Per-series metadata (sources, repairs per rule, gaps) rides in the head's Parquet
key-value metadata under ``chartrl`` so ``chartrl data`` can report it without reading the candles
(``series``). An older single-file store (the head holds the rows) is migrated by its next write.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from chartrl.atomic import atomic_write
from chartrl.errors import DataError
from chartrl.logs import get_logger
from chartrl.market.candles import COLUMNS, PRICE_COLUMNS, empty_candles
from chartrl.market.months import (
    LAYOUT,
    Stored,
    is_monthly,
    keys_around,
    month_path,
    month_slices,
    read_months,
    split_months,
)
from chartrl.market.series import (
    META_KEY,
    SeriesSummary,
    checked_meta,
    summary_from_meta,
    unreadable,
    updated_meta,
)
from chartrl.market.series import safe_name as _safe
from chartrl.market.validate import ValidationReport, fmt_ts, same_values, validate_candles

log = get_logger("chartrl.market.store")

CONTEXT_ROWS = 1  # stored candles either side of a batch: the spike rule's previous and next close


class CandleStore:
    """Candles on disk under ``data_dir``; every write is validated and atomic."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.root = self.data_dir / "candles"

    def path(self, exchange: str, symbol: str, timeframe: str) -> Path:
        return self.root / _safe(exchange) / _safe(symbol) / f"{_safe(timeframe)}.parquet"

    # ---- reading -----------------------------------------------------------------------------

    def _read(self, path: Path, exchange: str, symbol: str, timeframe: str) -> pa.Table:
        """The series' candles (its month files, or an old single file's rows); metadata on the schema."""
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise unreadable(path, exc) from None
        meta = checked_meta(path, table.schema, exchange, symbol, timeframe)
        if not is_monthly(meta):
            return table
        months = read_months(path, exchange, symbol, timeframe)
        if months is None:
            return table
        return months.replace_schema_metadata(table.schema.metadata)

    def _meta(self, path: Path, exchange: str, symbol: str, timeframe: str) -> dict[str, Any]:
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as exc:
            raise unreadable(path, exc) from None
        return checked_meta(path, schema, exchange, symbol, timeframe)

    def load(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """The canonical frame of stored candles with ``start <= timestamp <= end`` (UTC)."""
        path = self.path(exchange, symbol, timeframe)
        if not path.is_file():
            raise DataError(
                f"no candles stored for {exchange} {symbol} {timeframe} in {self.data_dir}; run "
                f"`chartrl fetch --exchange {exchange} --symbol {symbol} --timeframe {timeframe}` "
                f"or `chartrl import FILE --exchange {exchange} --symbol {symbol} --timeframe {timeframe}`"
            )
        df = self._frame(self._read(path, exchange, symbol, timeframe))
        if start is None and end is None:
            return df
        mask = np.ones(len(df), bool)
        if start is not None:
            mask &= (df["timestamp"] >= _utc(start)).to_numpy()
        if end is not None:
            mask &= (df["timestamp"] <= _utc(end)).to_numpy()
        out = df[mask].reset_index(drop=True)
        if out.empty:
            stored = (
                f"{fmt_ts(df['timestamp'].iloc[0])} to {fmt_ts(df['timestamp'].iloc[-1])}"
                if len(df)
                else "none"
            )
            raise DataError(
                f"no {exchange} {symbol} {timeframe} candles between {fmt_ts(start) if start is not None else 'the start'} "
                f"and {fmt_ts(end) if end is not None else 'the end'} (stored: {stored}); choose another range or fetch more"
            )
        return out

    @staticmethod
    def _frame(table: pa.Table) -> pd.DataFrame:
        df = table.select(COLUMNS).to_pandas()
        ts = df["timestamp"]
        # to_datetime on a column that already is datetime64 walks it in Python: convert directly.
        ts = (
            ts.dt.tz_localize("UTC")
            if getattr(ts.dt, "tz", None) is None
            else ts.dt.tz_convert("UTC")
        )
        df["timestamp"] = ts.astype("datetime64[ns, UTC]")
        for c in PRICE_COLUMNS + ["volume"]:
            df[c] = df[c].astype("float64")
        return df

    def last_timestamp(self, exchange: str, symbol: str, timeframe: str) -> pd.Timestamp | None:
        """Open time of the newest stored candle, or None when nothing is stored (reads the footer only)."""
        path = self.path(exchange, symbol, timeframe)
        if not path.is_file():
            return None
        last = self._meta(path, exchange, symbol, timeframe).get("last")
        if last:
            return pd.Timestamp(last)
        ts = self._frame(self._read(path, exchange, symbol, timeframe))["timestamp"]
        return ts.iloc[-1] if len(ts) else None

    def summary(self, exchange: str, symbol: str, timeframe: str) -> SeriesSummary:
        path = self.path(exchange, symbol, timeframe)
        return summary_from_meta(
            path, self._meta(path, exchange, symbol, timeframe), exchange, symbol, timeframe
        )

    def list_series(
        self, exchange: str | None = None, symbol: str | None = None, timeframe: str | None = None
    ) -> list[SeriesSummary]:
        """The stored series (those matching the given parts), sorted by exchange/symbol/timeframe, from the file footers.

        A file that cannot be read is listed with ``error`` set instead of hiding the others.
        """
        for d in (self.data_dir, self.root):
            if d.exists() and not d.is_dir():
                raise DataError(
                    f"{d} is not a directory; check --data-dir / data.dir / CHARTRL_DATA_DIR"
                )
        parts = [glob.escape(_safe(p)) if p else "*" for p in (exchange, symbol, timeframe)]
        out = []
        for path in sorted(self.root.glob(f"{parts[0]}/{parts[1]}/{parts[2]}.parquet")):
            exchange, symbol, timeframe = (
                path.parent.parent.name,
                path.parent.name.replace("-", "/"),
                path.stem,
            )
            try:
                meta = self._meta(path, exchange, symbol, timeframe)
            except DataError as exc:
                out.append(SeriesSummary(exchange, symbol, timeframe, path, error=str(exc)))
                continue
            out.append(summary_from_meta(path, meta, exchange, symbol, timeframe))
        return sorted(out, key=lambda s: (s.exchange, s.symbol, s.timeframe))

    # ---- writing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 - closed below, after the try
        except OSError as exc:
            raise self._unwritable(exc) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _stored(
        self, path: Path, exchange: str, symbol: str, timeframe: str, keys: set[str] | None = None
    ) -> Stored:
        """The stored candles and metadata (empty when nothing is stored).

        With ``keys`` (months) and a month-partitioned series, only those months are read in full;
        the others give their timestamps (``Stored.others``), enough for the series totals.
        """
        if not path.is_file():
            # A first write killed between its month files and its head: the month files are candles.
            months = read_months(path, exchange, symbol, timeframe)
            return Stored(empty_candles() if months is None else self._frame(months), {})
        meta = self._meta(path, exchange, symbol, timeframe)
        if keys is not None and is_monthly(meta):
            part, others = split_months(path, exchange, symbol, timeframe, keys)
            old = empty_candles() if part is None else self._frame(part)
            return Stored(old, meta, others, keys)
        table = self._read(path, exchange, symbol, timeframe)
        raw = (table.schema.metadata or {}).get(META_KEY)
        return Stored(self._frame(table), json.loads(raw) if raw else {})

    def _batch_keys(self, frame: pd.DataFrame) -> set[str] | None:
        ts = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce").dropna()
        return keys_around(ts.min(), ts.max()) if len(ts) else None

    def ingest(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        raw: pd.DataFrame,
        source: str,
        strict: bool = False,
        spike_factor: float = 3.0,
        require_rows: bool = False,
    ) -> SeriesSummary:
        """Validate ``raw`` (with stored neighbours as context) and merge it; the summary carries the report.

        ``require_rows``: refuse a batch without one usable candle before touching the store (an
        import that says "nothing was stored" must not have recorded its repairs either).
        """
        path = self.path(exchange, symbol, timeframe)
        with self._locked(path):
            stored = self._stored(path, exchange, symbol, timeframe, self._batch_keys(raw))
            old = stored.frame
            context = None
            if len(old) and not raw.empty:
                ts = pd.to_datetime(raw["timestamp"], utc=True, errors="coerce")
                lo, hi = ts.min(), ts.max()
                if pd.notna(lo):
                    pos_lo = max(int(old["timestamp"].searchsorted(lo)) - CONTEXT_ROWS, 0)
                    pos_hi = int(old["timestamp"].searchsorted(hi, side="right")) + CONTEXT_ROWS
                    context = old.iloc[pos_lo:pos_hi]
            clean, report = validate_candles(
                raw, source, strict, timeframe=timeframe, spike_factor=spike_factor, context=context
            )
            if require_rows and clean.empty:
                raise DataError(
                    f"{source}: none of its {report.rows_in:,} rows is a usable candle ({report.describe()}); nothing was stored"
                )
            summary = self._merge_locked(
                path, stored, exchange, symbol, timeframe, clean, report, strict
            )
        summary.report = report
        return summary

    def merge(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        new_df: pd.DataFrame,
        report: ValidationReport,
        strict: bool = False,
    ) -> SeriesSummary:
        """Merge validated candles into the series (new values win) and write it atomically.

        A stored candle the new source changes is counted as ``replaced_stored`` (refused when
        ``strict``). Nothing is written when the batch adds, changes and repairs nothing.
        """
        path = self.path(exchange, symbol, timeframe)
        with self._locked(path):
            stored = self._stored(path, exchange, symbol, timeframe, self._batch_keys(new_df))
            return self._merge_locked(
                path, stored, exchange, symbol, timeframe, new_df, report, strict
            )

    def _merge_locked(
        self,
        path: Path,
        stored: Stored,
        exchange: str,
        symbol: str,
        timeframe: str,
        new_df: pd.DataFrame,
        report: ValidationReport,
        strict: bool,
    ) -> SeriesSummary:
        new = new_df[COLUMNS]
        if stored.keys is not None and not set(month_slices(new)) <= stored.keys:
            stored = self._stored(path, exchange, symbol, timeframe)  # a month it did not read: all
        old, meta = stored.frame, stored.meta
        overlap = old.merge(new, on="timestamp", suffixes=("_old", ""))
        cols = PRICE_COLUMNS + ["volume"]
        changed = ~same_values(
            overlap[[c + "_old" for c in cols]].to_numpy(), overlap[cols].to_numpy()
        )
        replaced = int(changed.sum())
        added = len(new) - len(overlap)
        if replaced:
            ex = overlap[changed].head(3)
            examples = [
                f"{fmt_ts(r.timestamp)} close {r.close_old:.10g} -> {r.close:.10g}"
                for r in ex.itertuples(index=False)
            ]
            if strict:
                raise DataError(
                    f"--strict: {report.source} changes {replaced} stored {exchange} {symbol} {timeframe} "
                    f"candles (e.g. {examples[0]}); rerun without --strict to accept the newer values"
                )
            report.add("replaced_stored", replaced, examples)
            log.warning(
                "stored_candles_replaced", source=report.source, rows=replaced, examples=examples
            )
        # The months whose files change: those of added or changed candles (all of an old single-file store).
        touched = set(
            month_slices(
                pd.concat(
                    [new[~new["timestamp"].isin(overlap["timestamp"])], overlap[changed]]
                ).sort_values("timestamp")
            )
        )
        if not added and not replaced:
            stale = is_monthly(meta) and int(meta.get("count", -1)) != stored.total
            if old.empty or not (report.repairs or stale):
                return summary_from_meta(path, meta, exchange, symbol, timeframe)
            merged = old  # nothing to store, but its repairs must still count in `chartrl data`
        elif old.empty:
            merged = new.reset_index(drop=True)
        else:
            merged = pd.concat(
                [old[~old["timestamp"].isin(new["timestamp"])], new], ignore_index=True
            )
            merged = merged.sort_values("timestamp", kind="stable").reset_index(drop=True)
        migrate = bool(len(old)) and not is_monthly(meta)
        every = merged if stored.others is None else stored.all_stamps(merged)
        meta = updated_meta(meta, exchange, symbol, timeframe, every, report, added, replaced)
        meta["layout"] = LAYOUT
        self._write(path, merged, meta, None if migrate else touched)
        summary = summary_from_meta(path, meta, exchange, symbol, timeframe)
        summary.added, summary.replaced = added, replaced
        log.info(
            "candles_stored",
            series=summary.series,
            source=report.source,
            added=added,
            replaced=replaced,
            count=summary.count,
            last=fmt_ts(summary.last),
            repairs=report.counts(),
        )
        return summary

    def _write(
        self, path: Path, df: pd.DataFrame, meta: dict[str, Any], months: set[str] | None
    ) -> None:
        """Write the month files in ``months`` (all of them when None), then the head.

        The head goes last: a crash before it leaves a store whose candles are all readable (an
        interrupted migration leaves the old single file as the head, which is still read as it is).
        """
        series = {k: meta[k] for k in ("exchange", "symbol", "timeframe")}
        written: list[str] = []
        try:
            for key, rows in month_slices(df).items():
                if months is not None and key not in months:
                    continue
                part = _table(df.iloc[rows], {**series, "month": key})
                atomic_write_table(part, month_path(path, key))
                written.append(key)
            atomic_write_table(_table(df.iloc[:0], meta), path)
        except OSError as exc:  # disk full, read-only mount: the old files are intact, say so
            if not written or months is None:  # nothing written, or a migration: the old head rules
                raise self._unwritable(exc) from None
            raise DataError(
                f"cannot finish writing candles under {self.data_dir} ({exc.strerror or exc}); the months "
                f"{', '.join(written)} of {path.parent.name} {path.stem} were stored but its summary was not "
                "updated (the next write updates it); check free space"
            ) from None

    def _unwritable(self, exc: OSError) -> DataError:
        where = f": {exc.filename}" if exc.filename else ""
        return DataError(
            f"cannot write candles under {self.data_dir} ({exc.strerror or exc}{where}); the stored candles are "
            "unchanged; check --data-dir / data.dir / CHARTRL_DATA_DIR and free space"
        )


def _table(df: pd.DataFrame, meta: dict[str, Any]) -> pa.Table:
    table = pa.Table.from_pandas(df[COLUMNS], preserve_index=False)
    return table.replace_schema_metadata(
        {**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()}
    )


def atomic_write_table(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that a crash at any point leaves the old file intact."""
    atomic_write(path, lambda fh: pq.write_table(table, fh, compression="zstd"))


def _utc(value: datetime | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
