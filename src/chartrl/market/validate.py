"""Validation of every candle that enters the store: named rules, counted, logged, never silent.

``validate_candles`` returns the clean canonical frame and a :class:`ValidationReport`. Each rule
drops the rows it catches (nothing is invented or filled); the report counts them per rule with a
few example rows, and each rule that fires is logged once. With ``strict=True`` any repair becomes a
:class:`DataError` naming the rules, counts and example rows instead.

Rules, in the order they run:
  bad_timestamp          the timestamp is missing or unparseable
  misaligned             the timestamp is not on the timeframe grid (e.g. 04:30 in a 1h series)
  nan                    a price or the volume is missing (NaN/NULL)
  nonpositive_price      a price is zero or negative
  negative_volume        the volume is negative
  high_below_body        high < max(open, close)
  low_above_body         low > min(open, close)
  duplicate              same timestamp and the same values (up to the coarser row's rounding)
  conflicting_duplicate  same timestamp, different values: the preferred row is kept (see below)
  price_spike            an isolated outlier: a price more than ``spike_factor`` times away from both
                         the previous and the next candle's close (e.g. a bad first trade); the
                         newest candle is never judged (see ``_spike_mask``)
  replaced_stored        (store merge) a stored candle got different values from a newer source

Among rows sharing a timestamp the one with the highest ``priority`` column (if the input has one,
e.g. the importer's decimal precision) wins, then the later row in input order: "the later source".
Reordering is not a repair (nothing is lost) and is only noted. Gaps are reported, never filled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from chartrl.errors import DataError
from chartrl.logs import get_logger
from chartrl.market.candles import COLUMNS, PRICE_COLUMNS, empty_candles
from chartrl.timeframe import candles_between, timeframe_ms

log = get_logger("chartrl.market.validate")

RULES = (
    "bad_timestamp",
    "misaligned",
    "nan",
    "nonpositive_price",
    "negative_volume",
    "high_below_body",
    "low_above_body",
    "duplicate",
    "conflicting_duplicate",
    "price_spike",
)
MAX_DECIMALS = 12
# An export rounds a value by less than this fraction of it; a bigger difference is another value even
# when the coarser one is round (0.00001 vs 0.0000149 is not a rounding, though half of 1e-5 apart).
MAX_ROUNDING = 0.01
MAX_EXAMPLES = 3


@dataclass
class RuleHit:
    """One rule that fired: how many rows it dropped and a few of them, human-readable."""

    rule: str
    count: int
    examples: list[str] = field(default_factory=list)


@dataclass
class GapReport:
    """Missing candles between the first and last one (never filled)."""

    count: int = 0
    missing: int = 0  # candles missing in total
    largest: int = 0  # candles missing in the largest gap
    largest_after: str | None = None  # open time of the candle before the largest gap
    examples: list[str] = field(default_factory=list)  # "N missing after X", largest first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> GapReport:
        return cls(**d) if d else cls()

    def describe(self) -> str:
        if not self.count:
            return "no gaps"
        return f"{self.count} gaps, {self.missing} candles missing, largest {self.largest} after {self.largest_after}"


@dataclass
class ValidationReport:
    """What validation did to one batch of candles from one source."""

    source: str
    rows_in: int = 0
    rows_out: int = 0
    repairs: dict[str, RuleHit] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    gaps: GapReport = field(default_factory=GapReport)

    @property
    def repaired(self) -> int:
        return sum(h.count for h in self.repairs.values())

    def counts(self) -> dict[str, int]:
        return {r: h.count for r, h in self.repairs.items()}

    def add(self, rule: str, count: int, examples: list[str]) -> None:
        if count <= 0:
            return
        hit = self.repairs.setdefault(rule, RuleHit(rule, 0))
        hit.count += count
        hit.examples = (hit.examples + examples)[:MAX_EXAMPLES]

    def describe(self) -> str:
        """One line: the rules that fired with counts and an example each."""
        parts = [
            f"{h.rule} {h.count} (e.g. {h.examples[0]})" if h.examples else f"{h.rule} {h.count}"
            for h in self.repairs.values()
        ]
        return "; ".join(parts) if parts else "no repairs"


def fmt_ts(ts: Any) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%d %H:%M") if pd.notna(ts) else "NaT"


def _describe_rows(
    df: pd.DataFrame, limit: int = MAX_EXAMPLES, why: pd.Series | None = None
) -> list[str]:
    out = []
    for i, (_, row) in enumerate(df.head(limit).iterrows()):
        where = (
            f"line {int(row['source_row'])} "
            if "source_row" in df.columns and pd.notna(row.get("source_row"))
            else ""
        )
        vals = " ".join(f"{c[0]}={row[c]:.10g}" for c in PRICE_COLUMNS + ["volume"])
        extra = f" ({why.iloc[i]})" if why is not None else ""
        out.append(f"{where}{fmt_ts(row['timestamp'])} {vals}{extra}")
    return out


def _decimals(x: np.ndarray) -> np.ndarray:
    """Decimal places of each value printed shortest: 12000.0 -> 0, 11783.31 -> 2, 0.00001234 -> 8."""
    out = np.full(x.shape, MAX_DECIMALS)
    for d in range(MAX_DECIMALS - 1, -1, -1):  # downwards, so the fewest exact places win
        out = np.where(np.abs(np.round(x, d) - x) <= 1e-12 * np.abs(x), d, out)
    return out


def same_values(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row of two (n, 5) open/high/low/close/volume arrays: the same candle, up to the coarser row's rounding.

    Equal after rounding to the decimals of the less precise of the two, so a 2-decimal export of
    11783.3149 (11783.31) is the same value while 0.00001234 vs 0.00001250 or 0.0612 vs 0.0650 are
    not: an absolute tolerance would make every low-priced value "equal". A price row's precision is
    the most decimals any of its four prices shows, because a float drops trailing zeros (12000.00
    reads as 12000.0; the row's 11169.84 tells it was rounded to cents, not to units).
    """
    dec_a, dec_b = _decimals(a), _decimals(b)
    d = np.minimum(dec_a, dec_b)
    d[:, :4] = np.minimum(dec_a[:, :4].max(axis=1), dec_b[:, :4].max(axis=1))[:, None]
    scale = np.maximum(np.abs(a), np.abs(b))
    tol = np.minimum(0.5 * 10.0**-d, MAX_ROUNDING * scale) + 1e-12 * scale
    return ((np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= tol)).all(axis=1)


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"candle frame lacks columns {', '.join(missing)}; expected {', '.join(COLUMNS)}"
        )
    out = df.copy()
    ts = out["timestamp"]
    if not pd.api.types.is_datetime64_any_dtype(ts):
        ts = pd.to_datetime(ts, utc=True, errors="coerce")
    elif getattr(ts.dt, "tz", None) is None:
        ts = ts.dt.tz_localize("UTC")
    out["timestamp"] = ts.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    for c in PRICE_COLUMNS + ["volume"]:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    return out.reset_index(drop=True)


def find_gaps(timestamps: pd.Series, timeframe: str, max_examples: int = 5) -> GapReport:
    """Gaps in an ascending, unique timestamp column."""
    if len(timestamps) < 2:
        return GapReport()
    ms = timestamps.astype("int64").to_numpy() // 1_000_000
    missing = candles_between(ms[:-1], ms[1:], timeframe) - 1  # calendar months for 1M, not 30 days
    idx = np.flatnonzero(missing > 0)
    if not len(idx):
        return GapReport()
    order = idx[np.argsort(-missing[idx], kind="stable")]
    ts = timestamps.reset_index(
        drop=True
    )  # only a few are formatted: no object array of all of them
    return GapReport(
        count=int(len(idx)),
        missing=int(missing[idx].sum()),
        largest=int(missing[order[0]]),
        largest_after=fmt_ts(ts.iloc[order[0]]),
        examples=[
            f"{int(missing[i])} missing after {fmt_ts(ts.iloc[i])}" for i in order[:max_examples]
        ],
    )


def _spike_mask(
    df: pd.DataFrame, factor: float, context: pd.DataFrame | None
) -> tuple[np.ndarray, pd.Series]:
    """Rows of ``df`` (sorted, unique) that are isolated outliers, and for each the closes it was held against.

    A row is one when a price of it is more than ``factor`` times away from both the previous and the
    next candle's close (stored candles in ``context`` count as neighbours). A real crash stays near
    the next close, a bad print is far from both. The newest candle has no next one, so it is never
    judged: otherwise a genuine crash at the end of a fetch would be dropped for good. The oldest
    candle of the series has no previous one and is held against its own close instead.
    """
    none = np.zeros(len(df), bool), pd.Series([""] * len(df), dtype=object)
    if factor <= 0 or df.empty:
        return none
    frames = [df[["timestamp", "close"]].assign(_own=True)]
    if context is not None and not context.empty:
        ctx = context.loc[~context["timestamp"].isin(df["timestamp"]), ["timestamp", "close"]]
        frames.append(ctx.assign(_own=False))
    both = pd.concat(frames, ignore_index=True).sort_values("timestamp", kind="stable")
    closes, own = both["close"].to_numpy(), both["_own"].to_numpy()
    prev_close = np.concatenate([[np.nan], closes[:-1]])[own]
    next_close = np.concatenate([closes[1:], [np.nan]])[own]
    prev_close = np.where(np.isnan(prev_close), df["close"].to_numpy(), prev_close)
    prices = df[PRICE_COLUMNS].to_numpy()

    def away(ref: np.ndarray) -> np.ndarray:
        ratio = prices / ref[:, None]
        return np.maximum(ratio, 1 / ratio)

    mask = ~np.isnan(next_close) & (
        np.minimum(away(prev_close), away(next_close)).max(axis=1) > factor
    )
    why = pd.Series(
        [
            f"previous close {p:.10g}, next close {n:.10g}"
            for p, n in zip(prev_close, next_close, strict=True)
        ],
        dtype=object,
    )
    return mask, why


def validate_candles(
    df: pd.DataFrame,
    source: str,
    strict: bool,
    *,
    timeframe: str | None = None,
    spike_factor: float = 3.0,
    context: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Clean ``df`` into the canonical frame and report every row dropped and why.

    ``timeframe`` enables the grid check and gap report (inferred from the most common spacing
    when omitted). ``context`` is already-stored candles around the batch: they are neighbours for
    the spike rule (a new candle between stored ones is judged by them) but are never returned.
    Optional input columns: ``priority`` (higher wins among duplicates) and ``source_row`` (file
    line, shown in examples).
    """
    report = ValidationReport(source=source, rows_in=len(df))
    if df.empty:
        return empty_candles(), report
    work = _coerce(df)
    work["_order"] = np.arange(len(work))
    if "priority" not in work.columns:
        work["priority"] = 0

    def drop(rule: str, mask: pd.Series | np.ndarray, why: pd.Series | None = None) -> None:
        nonlocal work
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            bad = work[mask]
            report.add(
                rule, int(mask.sum()), _describe_rows(bad, why=None if why is None else why[mask])
            )
            work = work[~mask].reset_index(drop=True)

    drop("bad_timestamp", work["timestamp"].isna())
    if timeframe is None:
        timeframe = infer_timeframe(work["timestamp"])
    step = timeframe_ms(timeframe) if timeframe else 0
    if step and 86_400_000 % step == 0:
        drop("misaligned", (work["timestamp"].astype("int64") // 1_000_000) % step != 0)
    values = work[PRICE_COLUMNS + ["volume"]]
    drop("nan", values.isna().any(axis=1))
    drop("nonpositive_price", (work[PRICE_COLUMNS] <= 0).any(axis=1))
    drop("negative_volume", work["volume"] < 0)
    drop("high_below_body", work["high"] < work[["open", "close"]].max(axis=1))
    drop("low_above_body", work["low"] > work[["open", "close"]].min(axis=1))

    if not work["timestamp"].is_monotonic_increasing:
        report.notes.append("rows were not in ascending time order; sorted (nothing lost)")
    work = work.sort_values(["timestamp", "priority", "_order"], kind="stable").reset_index(
        drop=True
    )
    dup = work["timestamp"].duplicated(keep="last").to_numpy()
    if dup.any():
        kept = work[~dup].set_index("timestamp")
        lost = work[dup]
        ref = kept.loc[lost["timestamp"], PRICE_COLUMNS + ["volume"]].to_numpy()
        same = same_values(lost[PRICE_COLUMNS + ["volume"]].to_numpy(), ref)
        conflict = np.zeros(len(work), bool)
        conflict[np.flatnonzero(dup)[~same]] = True
        plain = dup & ~conflict
        drop_mask = pd.Series(conflict)
        why = pd.Series([""] * len(work), dtype=object)
        for pos, r in zip(np.flatnonzero(conflict), ref[~same], strict=True):
            why.iloc[pos] = "kept " + " ".join(
                f"{c[0]}={v:.10g}" for c, v in zip(PRICE_COLUMNS + ["volume"], r, strict=True)
            )
        report.add("duplicate", int(plain.sum()), _describe_rows(work[plain]))
        drop("conflicting_duplicate", drop_mask, why)
        work = work[~work["timestamp"].duplicated(keep="last")].reset_index(drop=True)

    drop("price_spike", *_spike_mask(work, spike_factor, context))

    report.rows_out = len(work)
    if timeframe:
        report.gaps = find_gaps(work["timestamp"], timeframe)
    for hit in report.repairs.values():
        log.warning(
            "candles_repaired",
            source=source,
            rule=hit.rule,
            rows=hit.count,
            examples=hit.examples,
            strict=strict,
        )
    if strict and report.repairs:
        raise DataError(
            f"--strict: {report.repaired} rows of {source} need repair: {report.describe()}; "
            "fix the source or rerun without --strict to drop them (each is logged)"
        )
    clean = work[COLUMNS].reset_index(drop=True)
    return clean, report


def infer_timeframe(timestamps: pd.Series) -> str | None:
    """The ccxt timeframe of the most common spacing, or None if it is not a standard one."""
    ts = timestamps.dropna().sort_values().drop_duplicates()
    if len(ts) < 3:
        return None
    step_s = int(pd.Series(np.diff(ts.astype("int64").to_numpy()) // 1_000_000_000).mode().iloc[0])
    if 29 * 86_400 <= step_s <= 31 * 86_400:
        return "1M"  # calendar months: 31 days apart most often, which is no timeframe of its own
    return seconds_to_timeframe(step_s)


def seconds_to_timeframe(seconds: int) -> str | None:
    for unit, size in (("M", 2_592_000), ("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return None
