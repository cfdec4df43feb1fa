"""CSV import: the CryptoDataDownload export family and plain ``timestamp,open,...,volume`` files.

Handled without special-casing one file: banner lines before the header (a URL or ``Created on``),
column-name variants and capitalisation (``unix``, ``Unix Timestamp``, ``Open``, ``Volume BTC``,
``Volume USDT``, ``Volume From``...), unix time in seconds (float), milliseconds or microseconds
decided per row, date strings in several formats (``2021-06-10 00:00:00``, ``2017-08-17 04-AM``,
ISO 8601), newest-first order, ``NULL`` cells. Volume is the base-asset volume. The parsed rows go
through :func:`chartrl.market.validate.validate_candles` (duplicates, NaN, zero prices...) via the
store, so every repair is a named, counted, logged rule.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from chartrl.errors import DataError, UsageError
from chartrl.logs import get_logger
from chartrl.market.candles import PRICE_COLUMNS
from chartrl.market.store import CandleStore, SeriesSummary
from chartrl.market.validate import infer_timeframe

log = get_logger("chartrl.market.importer")

# Normalised header names (lower case, single spaces), most specific first.
UNIX_NAMES = ("unix timestamp", "unix", "timestamp", "open time", "opentime", "time", "ts")
DATE_NAMES = ("date", "datetime", "date time", "time", "timestamp")
NULLS = {"", "null", "none", "nan", "na", "n/a", "-"}
DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %I-%p",  # CryptoDataDownload's older hourly exports: 2017-08-17 04-AM
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H-%M-%S",
    "%Y-%m-%d",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y",
)
HEADER_SCAN_LINES = 10


@dataclass
class ParsedCSV:
    """Rows of a candle CSV in candle columns (not yet validated) and what parsing noticed."""

    path: Path
    frame: pd.DataFrame  # timestamp, open, high, low, close, volume, priority, source_row
    columns: dict[str, str]  # our column -> the file's column
    notes: list[str] = field(default_factory=list)


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name.strip().strip('"').lower())


def _symbol_key(symbol: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", symbol.upper())


def _find_header(path: Path) -> int:
    """Index of the header line: the first that names a time column and an open or close column."""
    try:
        with open(path, encoding="utf-8-sig", errors="strict", newline="") as fh:
            lines = [fh.readline() for _ in range(HEADER_SCAN_LINES)]
    except UnicodeDecodeError:
        raise DataError(
            f"{path} is not a text CSV file; expected a candle CSV (timestamp, open, high, low, close, volume)"
        ) from None
    for i, line in enumerate(lines):
        names = {_norm(c) for c in next(csv.reader([line]), [])}
        if names & {"open", "close"} and names & set(UNIX_NAMES + DATE_NAMES):
            return i
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    found = ", ".join(next(csv.reader([first]), [])[:8]) if first else "an empty file"
    other_sep = next(
        (
            name
            for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars"))
            if sep in first
        ),
        None,
    )
    hint = f"; its columns look separated by {other_sep}: save it with commas" if other_sep else ""
    raise DataError(
        f"{path} is not a candle CSV: no header with a time column (unix/timestamp/date) and open/high/low/close/volume "
        f"in its first {HEADER_SCAN_LINES} lines (found: {found}){hint}"
    )


def _volume_column(cols: dict[str, str], symbol: str | None) -> str | None:
    """The base-asset volume column among ``Volume``, ``Volume BTC``, ``Volume USDT``, ``Volume From``..."""
    vols = {n: c for n, c in cols.items() if n.startswith("volume") or n in ("vol", "base volume")}
    if "volume" in vols:
        return vols["volume"]
    if "volume from" in vols:  # older exports: From = base, To = quote
        return vols["volume from"]
    if symbol and "/" in symbol:
        base, quote = (_norm(p.split(":")[0]) for p in symbol.split("/", 1))
        if f"volume {base}" in vols:
            return vols[f"volume {base}"]
        others = [c for n, c in vols.items() if n not in (f"volume {quote}", "volume to")]
        if len(others) == 1:
            return others[0]
    return next(iter(vols.values()), None) if len(vols) == 1 else None


def parse_unix(values: pd.Series) -> pd.Series:
    """Epoch numbers to UTC timestamps, unit decided per row by magnitude (s, ms or µs)."""
    num = pd.to_numeric(values, errors="coerce")
    a = num.abs()
    ms = np.where(a >= 1e14, num / 1000, np.where(a >= 1e11, num, num * 1000))
    ms = pd.Series(ms, index=values.index)
    ok = ms.notna() & (a >= 1e8)  # smaller numbers are not plausible epoch times (1973+)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    out[ok] = pd.to_datetime(ms[ok].round().astype("int64"), unit="ms", utc=True)
    return out


def parse_dates(values: pd.Series) -> pd.Series:
    """Date strings in any of DATE_FORMATS or ISO 8601 to UTC timestamps (naive ones are UTC)."""
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    todo = values.notna()
    for fmt in DATE_FORMATS:
        if not todo.any():
            break
        parsed = pd.to_datetime(values[todo], format=fmt, errors="coerce", utc=True)
        out[parsed.dropna().index] = parsed.dropna()
        todo &= out.isna()
    if todo.any():
        parsed = pd.to_datetime(values[todo], format="ISO8601", errors="coerce", utc=True)
        out[parsed.dropna().index] = parsed.dropna()
    return out


def _parse_time(raw: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(raw, errors="coerce")
    out = parse_unix(raw)
    text = numeric.isna() & raw.notna()
    if text.any():
        out[text] = parse_dates(raw[text])
    return out


def _decimals(raw: pd.Series) -> pd.Series:
    # fillna("") before len: filling the NaN lengths of an all-NaN column is a pandas FutureWarning on stderr.
    return raw.str.extract(r"\.(\d+)$", expand=False).fillna("").str.len().astype("int64")


def read_candle_csv(path: Path | str, symbol: str | None = None) -> ParsedCSV:
    """Parse a candle CSV of the family into candle columns; raises DataError (UsageError for a wrong path) naming the file."""
    path = Path(path)
    # A wrong path is a usage error (exit 2), not bad data: nothing was read.
    if path.is_dir():
        raise UsageError(f"{path} is a directory; pass one candle CSV file")
    if not path.is_file():
        raise UsageError(
            f"{path} does not exist or is not a file; pass the path of a candle CSV file"
        )
    header = _find_header(path)
    try:
        raw = pd.read_csv(
            path, skiprows=header, dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path} is not a readable CSV ({str(exc).splitlines()[0]})") from None
    cols = {}
    for c in raw.columns:
        cols.setdefault(_norm(str(c)), c)
    missing = [c for c in PRICE_COLUMNS if c not in cols]
    unix_col = next((cols[n] for n in UNIX_NAMES if n in cols), None)
    date_col = next((cols[n] for n in DATE_NAMES if n in cols and cols[n] != unix_col), None)
    vol_col = _volume_column(cols, symbol)
    if unix_col is None and date_col is None:
        missing.insert(0, "timestamp (unix/timestamp/date)")
    if vol_col is None:
        missing.append("volume (Volume, Volume <base>)")
    if missing:
        raise DataError(
            f"{path} is not a candle CSV: missing columns {', '.join(missing)} (found: {', '.join(map(str, raw.columns))})"
        )

    used_cols = list(
        dict.fromkeys(
            c
            for c in (
                unix_col,
                date_col,
                vol_col,
                cols.get("symbol"),
                *(cols[p] for p in PRICE_COLUMNS),
            )
            if c
        )
    )
    raw = (
        raw[used_cols]
        .apply(lambda s: s.str.strip())
        .mask(lambda d: d.apply(lambda s: s.str.lower().isin(NULLS)))
    )
    notes: list[str] = []
    _check_symbol(path, raw, cols, symbol)
    ts = _parse_time(raw[unix_col]) if unix_col else parse_dates(raw[date_col])
    if unix_col and date_col:
        alt = parse_dates(raw[date_col])
        fill = ts.isna() & alt.notna()
        if fill.any():
            ts[fill] = alt[fill]
            notes.append(
                f"{int(fill.sum())} rows had no usable {unix_col!r}; their {date_col!r} was used"
            )
        both = ts.notna() & alt.notna() & ~fill
        differ = both & (ts != alt)
        if differ.any():
            first = int(np.flatnonzero(differ.to_numpy())[0])
            notes.append(
                f"{int(differ.sum())} rows have a {date_col!r} that disagrees with {unix_col!r} "
                f"(e.g. line {first + header + 2}: {raw[date_col].iloc[first]} vs {ts.iloc[first]:%Y-%m-%d %H:%M}); "
                f"{unix_col!r} was used"
            )
    frame = pd.DataFrame({"timestamp": ts})
    for c in PRICE_COLUMNS:
        frame[c] = pd.to_numeric(raw[cols[c]], errors="coerce")
    frame["volume"] = pd.to_numeric(raw[vol_col], errors="coerce")
    # Among duplicated hours, the more precise export wins over a rounded one.
    frame["priority"] = np.maximum(
        _decimals(raw[cols["close"]].fillna("")), _decimals(raw[vol_col].fillna(""))
    )
    frame["source_row"] = np.arange(len(frame)) + header + 2
    used = {
        "timestamp": unix_col or date_col,
        **{c: cols[c] for c in PRICE_COLUMNS},
        "volume": vol_col,
    }
    return ParsedCSV(path=path, frame=frame, columns=used, notes=notes)


def _check_symbol(path: Path, raw: pd.DataFrame, cols: dict[str, str], symbol: str | None) -> None:
    if not symbol or "symbol" not in cols:
        return
    values = raw[cols["symbol"]].dropna()
    if values.empty:
        return
    keys = values.map(_symbol_key)
    want = _symbol_key(symbol)
    if not (keys == want).mean() >= 0.5:
        seen = values.iloc[0]
        raise DataError(
            f"{path} holds {seen} candles, not {symbol}; pass --symbol to match the file"
        )


def import_csv(
    path: Path | str,
    store: CandleStore,
    exchange: str,
    symbol: str,
    timeframe: str,
    strict: bool = False,
    spike_factor: float = 3.0,
) -> SeriesSummary:
    """Parse, validate and merge a CSV into the store; the summary carries the validation report."""
    parsed = read_candle_csv(path, symbol)
    if parsed.frame.empty:
        raise DataError(f"{parsed.path} has a header but no candle rows; nothing was imported")
    seen = infer_timeframe(parsed.frame["timestamp"])
    if seen and seen != timeframe:
        raise DataError(
            f"{parsed.path} holds {seen} candles (most common spacing), not {timeframe}; pass --timeframe {seen}"
        )
    for note in parsed.notes:
        log.warning("import_note", file=str(parsed.path), note=note)
    # require_rows: with no usable row exit 0 would tell a script the import worked.
    summary = store.ingest(
        exchange,
        symbol,
        timeframe,
        parsed.frame,
        source=f"csv:{parsed.path.name}",
        strict=strict,
        spike_factor=spike_factor,
        require_rows=True,
    )
    if summary.report is not None:
        summary.report.notes[:0] = parsed.notes
    return summary
