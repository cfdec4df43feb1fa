"""Each validation rule: it drops exactly the rows it should, counts, gives examples, and strict refuses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chartrl.errors import DataError
from chartrl.market.candles import COLUMNS
from chartrl.market.validate import RULES, find_gaps, infer_timeframe, validate_candles


@pytest.fixture
def clean(candles: pd.DataFrame) -> pd.DataFrame:
    return candles.iloc[:200].copy()


def _run(df: pd.DataFrame, **kw):
    return validate_candles(df, "test", False, timeframe="1h", **kw)


def test_clean_input_passes_unchanged(clean):
    out, report = _run(clean)
    pd.testing.assert_frame_equal(out, clean.reset_index(drop=True))
    assert report.repairs == {} and report.rows_out == len(clean)
    assert list(out.columns) == COLUMNS and str(out["timestamp"].dtype) == "datetime64[ns, UTC]"


@pytest.mark.parametrize(
    "rule, mutate",
    [
        ("nan", lambda d: d.__setitem__("close", d["close"].where(d.index != 5, np.nan))),
        ("nan", lambda d: d.__setitem__("volume", d["volume"].where(d.index != 5, np.nan))),
        ("nonpositive_price", lambda d: d.__setitem__("low", d["low"].where(d.index != 5, 0.0))),
        (
            "nonpositive_price",
            lambda d: d.loc.__setitem__((5, ["open", "high", "low", "close"]), -1.0),
        ),
        (
            "negative_volume",
            lambda d: d.__setitem__("volume", d["volume"].where(d.index != 5, -3.0)),
        ),
        (
            "high_below_body",
            lambda d: d.__setitem__("high", d["high"].where(d.index != 5, d["close"] * 0.999)),
        ),
        (
            "low_above_body",
            lambda d: d.__setitem__("low", d["low"].where(d.index != 5, d["open"] * 1.001)),
        ),
        (
            "price_spike",
            lambda d: d.__setitem__("high", d["high"].where(d.index != 5, d["high"] * 4)),
        ),
        ("price_spike", lambda d: d.__setitem__("low", d["low"].where(d.index != 5, d["low"] / 4))),
        (
            "misaligned",
            lambda d: d.__setitem__(
                "timestamp",
                d["timestamp"].where(d.index != 5, d["timestamp"] + pd.Timedelta(minutes=30)),
            ),
        ),
        (
            "bad_timestamp",
            lambda d: d.__setitem__("timestamp", d["timestamp"].where(d.index != 5, pd.NaT)),
        ),
    ],
)
def test_each_rule_drops_the_bad_row(clean, rule, mutate):
    bad = clean.copy()
    mutate(bad)
    ts5 = clean["timestamp"].iloc[5]
    out, report = _run(bad)
    assert set(report.repairs) == {rule}
    assert report.repairs[rule].count == 1
    assert report.repairs[rule].examples, "each rule names example rows"
    assert len(out) == len(clean) - 1
    assert ts5 not in set(out["timestamp"])
    assert rule in RULES
    with pytest.raises(DataError, match=rule):
        validate_candles(bad, "test", True, timeframe="1h")


def test_spike_factor_zero_turns_rule_off(clean):
    bad = clean.copy()
    bad.loc[5, "high"] *= 4
    _, report = _run(bad, spike_factor=0)
    assert report.repairs == {}


def test_spike_needs_a_stored_or_batch_neighbour_on_both_sides(clean):
    new = clean.iloc[100:101].copy()
    new[["open", "high", "low", "close"]] *= 5  # a lone shifted candle
    _, newest = _run(
        new, context=clean.iloc[:100]
    )  # the newest candle: a crash and a bad print look alike
    assert newest.repairs == {}
    both_sides = pd.concat([clean.iloc[:100], clean.iloc[101:110]])
    _, between = _run(
        new, context=both_sides
    )  # stored neighbours on both sides: an isolated outlier
    assert between.counts() == {"price_spike": 1}
    assert "previous close" in between.repairs["price_spike"].examples[0]


def _crash(clean: pd.DataFrame, at: int) -> pd.DataFrame:
    """A real 75% crash at candle ``at``: it opens at the previous close, every later candle stays down."""
    out = clean.copy()
    prices = ["open", "high", "low", "close"]
    out.loc[at:, prices] = out.loc[at:, prices] / 4
    out.loc[at, "open"] = out.loc[at - 1, "close"]
    out.loc[at, "high"] = out.loc[at, "open"]
    return out


def test_genuine_crash_is_never_a_spike(clean):
    crashed = _crash(clean, 100)
    out, report = _run(crashed)  # the whole series at once (an import)
    assert report.repairs == {} and len(out) == len(clean)
    for i in (100, 101):  # one candle per tick, judged with the stored candles before it
        _, tick = _run(crashed.iloc[i : i + 1], context=crashed.iloc[:i])
        assert tick.repairs == {}


def test_low_priced_conflicts_are_not_plain_duplicates(clean):
    shib = clean.assign(
        **{c: clean[c] * 1e-9 for c in ("open", "high", "low", "close")}
    )  # ~0.00001
    other = shib.iloc[10:11].assign(
        **{c: shib[c].iloc[10] * 1.05 for c in ("open", "high", "low", "close")}
    )
    _, report = _run(pd.concat([shib, other], ignore_index=True))
    assert report.counts() == {"conflicting_duplicate": 1}
    ethbtc = pd.DataFrame(
        {
            "timestamp": clean["timestamp"].iloc[:2],
            "open": [0.0612, 0.0650],
            "high": [0.0650, 0.0650],
            "low": [0.0600, 0.0600],
            "close": [0.0612, 0.0612],
            "volume": [3.0, 3.0],
        }
    )
    dup = ethbtc.iloc[:1].assign(open=0.0650)  # 6% off: not a rounding
    _, report = _run(pd.concat([ethbtc, dup], ignore_index=True))
    assert report.counts() == {"conflicting_duplicate": 1}


def test_same_values_compares_at_the_coarser_rows_precision():
    from chartrl.market.validate import same_values

    def same(a, b):
        return bool(same_values(np.array([a], float), np.array([b], float))[0])

    assert same(
        [11783.3149, 11820.61, 11731.71, 11801.17, 2194.598589],
        [11783.31, 11820.61, 11731.71, 11801.17, 2194.60],
    )
    assert not same(
        [11783.31, 11820.61, 11731.71, 11801.17, 2194.6],
        [11783.30, 11820.61, 11731.71, 11801.17, 2194.6],
    )
    # 12000.00 reads as 12000.0, but its row shows cents: 11999.96 is another value, not a rounding
    assert not same(
        [12000.00, 12123.46, 10518.50, 11169.84, 1.0], [11999.96, 12123.46, 10518.50, 11169.84, 1.0]
    )
    assert same(
        [0.00001234, 0.0000125, 0.0000120, 0.0000124, 5e9],
        [0.00001234, 0.0000125, 0.0000120, 0.0000124, 5e9],
    )
    assert not same(
        [0.00001234, 0.0000125, 0.0000120, 0.0000124, 5e9],
        [0.0000125, 0.0000125, 0.0000120, 0.0000124, 5e9],
    )
    # a round price is no licence for a 49% difference
    assert not same([0.00001] * 4 + [1.0], [0.0000149] * 4 + [1.0])


def test_identical_duplicates_dropped_and_reported(clean):
    dup = pd.concat([clean, clean.iloc[10:15]], ignore_index=True)
    out, report = _run(dup)
    assert report.counts() == {"duplicate": 5}
    pd.testing.assert_frame_equal(out, clean.reset_index(drop=True))


def test_rounding_only_difference_is_a_plain_duplicate(clean):
    dup = clean.iloc[10:11].copy()
    dup["volume"] = dup["volume"].round(2)
    out, report = _run(pd.concat([clean, dup], ignore_index=True))
    assert report.counts() == {"duplicate": 1}


def test_conflicting_duplicate_keeps_the_later_row(clean):
    later = clean.iloc[10:11].copy()
    later["close"] = later["close"] * 1.001
    later["high"] = np.maximum(later["high"], later["close"])
    out, report = _run(pd.concat([clean, later], ignore_index=True))
    assert report.counts() == {"conflicting_duplicate": 1}
    assert "kept" in report.repairs["conflicting_duplicate"].examples[0]
    got = out.loc[out["timestamp"] == later["timestamp"].iloc[0], "close"].iloc[0]
    assert got == later["close"].iloc[0]


def test_conflicting_duplicate_priority_beats_input_order(clean):
    precise = clean.iloc[10:11].assign(priority=8)
    rounded = precise.assign(priority=2, open=precise["open"] + 1.0)
    base = clean.drop(index=10).assign(priority=0)
    out, report = _run(pd.concat([base, precise, rounded], ignore_index=True))
    assert report.counts() == {"conflicting_duplicate": 1}
    got = out.loc[out["timestamp"] == precise["timestamp"].iloc[0], "open"].iloc[0]
    assert got == precise["open"].iloc[0]


def test_unsorted_input_is_sorted_and_noted_not_repaired(clean):
    out, report = _run(clean.iloc[::-1])
    pd.testing.assert_frame_equal(out, clean.reset_index(drop=True))
    assert report.repairs == {} and any("sorted" in n for n in report.notes)
    validate_candles(clean.iloc[::-1], "t", True, timeframe="1h")  # strict accepts a reorder


def test_gaps_reported_never_filled(clean):
    holey = clean.drop(index=[20, 21, 22, 50])
    out, report = _run(holey)
    assert len(out) == len(holey)
    g = report.gaps
    assert (g.count, g.missing, g.largest) == (2, 4, 3)
    assert g.largest_after == clean["timestamp"].iloc[19].strftime("%Y-%m-%d %H:%M")
    assert find_gaps(clean["timestamp"], "1h").count == 0


def test_strict_message_names_rows_and_rules(clean):
    bad = clean.copy()
    bad.loc[7, "close"] = np.nan
    bad.loc[9, "open"] = 0.0
    with pytest.raises(DataError) as exc:
        validate_candles(bad, "file.csv", True, timeframe="1h")
    msg = str(exc.value)
    assert "\n" not in msg and "file.csv" in msg and "nan 1" in msg and "nonpositive_price 1" in msg
    assert clean["timestamp"].iloc[7].strftime("%Y-%m-%d %H:%M") in msg


def test_repairs_are_logged(clean):
    import io

    import structlog

    from chartrl.logs import configure_logging

    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    bad = clean.copy()
    bad.loc[3, "volume"] = -1
    try:
        _run(bad)
    finally:
        structlog.reset_defaults()
    out = stream.getvalue()
    assert '"rule": "negative_volume"' in out and '"candles_repaired"' in out


def test_naive_timestamps_are_utc_and_timeframe_inferred(clean):
    naive = clean.assign(timestamp=clean["timestamp"].dt.tz_localize(None))
    out, report = validate_candles(naive, "t", False)
    pd.testing.assert_series_equal(out["timestamp"], clean["timestamp"].reset_index(drop=True))
    assert infer_timeframe(clean["timestamp"]) == "1h"
    assert infer_timeframe(clean["timestamp"].iloc[::24]) == "1d"
