"""The Parquet store: round trip, merge semantics, metadata, errors, and crash-safe writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from chartrl.errors import DataError
from chartrl.market import store as store_mod
from chartrl.market.store import CandleStore
from chartrl.market.validate import validate_candles

SERIES = ("binance", "BTC/USDT", "1h")


def _merge(store: CandleStore, df: pd.DataFrame, source: str = "test", **kw):
    clean, report = validate_candles(df, source, False, timeframe="1h")
    return store.merge(*SERIES, clean, report, **kw)


def test_path_layout(tmp_path: Path):
    s = CandleStore(tmp_path)
    assert s.path(*SERIES) == tmp_path / "candles" / "binance" / "BTC-USDT" / "1h.parquet"
    assert s.path("bybit", "BTC/USDT:USDT", "4h").parent.name == "BTC-USDT_USDT"


def test_round_trip_is_canonical_and_utc(tmp_path: Path, candles: pd.DataFrame):
    s = CandleStore(tmp_path)
    summary = _merge(s, candles)
    assert (summary.added, summary.count) == (len(candles), len(candles))
    pd.testing.assert_frame_equal(s.load(*SERIES), candles)
    assert str(pq.read_schema(s.path(*SERIES)).field("timestamp").type).endswith("tz=UTC]")
    assert s.last_timestamp(*SERIES) == candles["timestamp"].iloc[-1]
    assert (
        summary.first == candles["timestamp"].iloc[0]
        and summary.last == candles["timestamp"].iloc[-1]
    )


def test_load_range_is_inclusive(tmp_path: Path, candles: pd.DataFrame):
    s = CandleStore(tmp_path)
    _merge(s, candles)
    t = candles["timestamp"]
    part = s.load(*SERIES, start=t.iloc[10], end=t.iloc[20].to_pydatetime())
    assert (
        len(part) == 11
        and part["timestamp"].iloc[0] == t.iloc[10]
        and part["timestamp"].iloc[-1] == t.iloc[20]
    )
    with pytest.raises(DataError, match="no binance BTC/USDT 1h candles between"):
        s.load(*SERIES, start=t.iloc[-1] + pd.Timedelta(days=1))


def test_load_missing_series_says_fetch_or_import(tmp_path: Path):
    with pytest.raises(DataError) as exc:
        CandleStore(tmp_path).load(*SERIES)
    msg = str(exc.value)
    assert "binance BTC/USDT 1h" in msg and "chartrl fetch" in msg and "chartrl import" in msg
    assert CandleStore(tmp_path).last_timestamp(*SERIES) is None


def test_incremental_merge_appends_and_new_values_win(tmp_path: Path, candles: pd.DataFrame):
    s = CandleStore(tmp_path)
    _merge(s, candles.iloc[:100], source="a")
    revised = candles.iloc[90:150].copy()
    revised.loc[95, "close"] *= 1.001
    revised.loc[95, "high"] = max(revised.loc[95, "high"], revised.loc[95, "close"])
    summary = _merge(s, revised, source="b")
    assert (summary.added, summary.replaced, summary.count) == (50, 1, 150)
    assert summary.repairs == {"replaced_stored": 1}
    assert s.load(*SERIES)["close"].iloc[95] == revised.loc[95, "close"]
    assert set(summary.sources) == {"a", "b"} and summary.sources["b"]["added"] == 50
    with pytest.raises(DataError, match="--strict"):
        _merge(
            s,
            revised.assign(close=revised["close"] * 1.0001, high=revised["high"] * 1.0001),
            strict=True,
        )


def test_merge_that_adds_nothing_does_not_rewrite(tmp_path: Path, candles: pd.DataFrame):
    s = CandleStore(tmp_path)
    _merge(s, candles.iloc[:100])
    before = s.path(*SERIES).stat().st_mtime_ns
    summary = _merge(s, candles.iloc[50:100])
    assert summary.added == 0 and summary.count == 100
    assert s.path(*SERIES).stat().st_mtime_ns == before


def test_metadata_keeps_repairs_gaps_and_list_series(tmp_path: Path, candles: pd.DataFrame):
    s = CandleStore(tmp_path)
    bad = candles.iloc[:300].drop(index=[100, 101, 102]).copy()
    bad.loc[5, "open"] = 0.0
    s.ingest(*SERIES, pd.concat([bad, bad.iloc[:4]]), source="csv:x.csv")
    s.ingest("kraken", "ETH/EUR", "1h", candles.iloc[:10], source="ccxt:kraken")
    listed = s.list_series()
    assert [(x.exchange, x.symbol) for x in listed] == [
        ("binance", "BTC/USDT"),
        ("kraken", "ETH/EUR"),
    ]
    btc = listed[0]
    assert btc.repairs == {"nonpositive_price": 1, "duplicate": 4}
    # rows 5 (zero price) and 100-102 are missing: two gaps, four candles
    assert (btc.gaps.count, btc.gaps.missing, btc.gaps.largest) == (2, 4, 3)
    assert btc.count == 296 and btc.sources["csv:x.csv"]["rows_in"] == 301
    (tmp_path / "candles" / "binance" / "BTC-USDT" / ".1h.parquet.abc.tmp").write_bytes(b"junk")
    assert len(s.list_series()) == 2  # a leftover temp file of a crashed write is not a series


def test_unreadable_file_is_a_data_error_naming_it(tmp_path: Path):
    s = CandleStore(tmp_path)
    p = s.path(*SERIES)
    p.parent.mkdir(parents=True)
    p.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=str(p)):
        s.load(*SERIES)


def test_exception_mid_write_leaves_old_file_intact(
    tmp_path: Path, candles: pd.DataFrame, monkeypatch
):
    s = CandleStore(tmp_path)
    _merge(s, candles.iloc[:1000])
    path = s.path(*SERIES)
    before = path.read_bytes()
    real = pq.write_table

    def half_then_fail(table, where, **kw):
        real(table.slice(0, len(table) // 2), where, **kw)  # bytes really hit the temp file...
        raise OSError("disk full")  # ...then the write dies

    monkeypatch.setattr(store_mod.pq, "write_table", half_then_fail)
    with pytest.raises(
        DataError,
        match=r"cannot write candles under .*\(disk full\); the stored candles are unchanged",
    ):
        _merge(s, candles)
    assert path.read_bytes() == before
    pd.testing.assert_frame_equal(s.load(*SERIES), candles.iloc[:1000])
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"] == []


def test_process_killed_mid_write_leaves_old_file_intact(tmp_path: Path, candles: pd.DataFrame):
    s = CandleStore(tmp_path)
    _merge(s, candles.iloc[:1000])
    path = s.path(*SERIES)
    before = path.read_bytes()
    # The child SIGKILLs itself after the new file's first bytes reached the disk: no cleanup runs.
    script = textwrap.dedent(
        f"""
        import os, signal
        import pyarrow.parquet as pq
        from chartrl.market import store as store_mod
        from chartrl.market.store import CandleStore
        from chartrl.market.validate import validate_candles
        from chartrl.testing.synthetic import synthetic_candles

        def killed(table, where, **kw):
            where.write(b"PAR1" + b"x" * 100_000)
            where.flush()
            os.fsync(where.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        store_mod.pq.write_table = killed
        df, report = validate_candles(synthetic_candles(3000, seed=11), "t", False, timeframe="1h")
        CandleStore({str(tmp_path)!r}).merge("binance", "BTC/USDT", "1h", df, report)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(store_mod.__file__).parents[2])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    leftovers = [p for p in path.parent.rglob("*") if p.suffix == ".tmp"]
    assert leftovers, "the child died mid-write (its temp file is left behind)"
    assert path.read_bytes() == before
    pd.testing.assert_frame_equal(s.load(*SERIES), candles.iloc[:1000])
    # and the next write still works, ignoring the debris
    assert _merge(s, candles).count == len(candles)


def test_file_of_another_series_is_refused_not_served(tmp_path: Path, candles: pd.DataFrame):
    s = CandleStore(tmp_path)
    _merge(s, candles.iloc[:50])
    eth = s.path("binance", "ETH/USDT", "1h")
    eth.parent.mkdir(parents=True)
    eth.write_bytes(s.path(*SERIES).read_bytes())  # a BTC file copied into the ETH slot
    before = eth.read_bytes()
    for call in (
        lambda: s.load("binance", "ETH/USDT", "1h"),
        lambda: s.last_timestamp("binance", "ETH/USDT", "1h"),
    ):
        with pytest.raises(
            DataError, match=r"holds binance BTC/USDT 1h candles, not binance ETH/USDT 1h"
        ):
            call()
    with pytest.raises(DataError, match="not binance ETH/USDT 1h"):
        s.ingest("binance", "ETH/USDT", "1h", candles.iloc[50:60], source="t")
    assert eth.read_bytes() == before  # nothing merged into the wrong file


def test_list_series_reports_a_broken_file_and_keeps_the_others(
    tmp_path: Path, candles: pd.DataFrame
):
    s = CandleStore(tmp_path)
    _merge(s, candles.iloc[:50])
    bad = s.path("binance", "BTC/USDT", "4h")
    bad.write_bytes(b"PAR1 truncated")
    listed = {x.timeframe: x for x in s.list_series()}
    assert listed["1h"].error is None and listed["1h"].count == 50
    assert listed["4h"].error is not None and str(bad) in listed["4h"].error


def test_unwritable_data_dir_or_full_disk_is_a_data_error(
    tmp_path: Path, candles: pd.DataFrame, monkeypatch
):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(DataError, match=r"cannot write candles under .*file \(Not a directory"):
        _merge(CandleStore(not_a_dir), candles.iloc[:10])
    s = CandleStore(tmp_path / "data")
    _merge(s, candles.iloc[:10])
    before = s.path(*SERIES).read_bytes()

    def full(*_a, **_k):
        raise OSError(28, "No space left on device", str(s.path(*SERIES)))

    monkeypatch.setattr(store_mod, "atomic_write_table", full)
    with pytest.raises(DataError, match="No space left on device.*unchanged"):
        _merge(s, candles.iloc[10:20])
    assert s.path(*SERIES).read_bytes() == before


def test_low_priced_changes_are_replacements_and_strict_refuses_them(
    tmp_path: Path, candles: pd.DataFrame
):
    shib = candles.iloc[:50].assign(
        **{c: candles[c].iloc[:50] * 1e-9 for c in ("open", "high", "low", "close")}
    )
    s = CandleStore(tmp_path)
    _merge(s, shib, source="csv:shib1.csv")
    later = shib.assign(
        **{c: shib[c] * 1.2 for c in ("open", "high", "low", "close")}
    )  # 20% apart, all < 0.0001
    with pytest.raises(DataError, match="--strict: csv:shib2.csv changes 50 stored"):
        _merge(s, later, source="csv:shib2.csv", strict=True)
    summary = _merge(s, later, source="csv:shib2.csv")
    assert (summary.added, summary.replaced) == (0, 50)
    assert s.load(*SERIES)["close"].tolist() == pytest.approx(later["close"].tolist(), rel=1e-12)


def test_repairs_of_a_batch_that_stores_nothing_are_still_counted(
    tmp_path: Path, candles: pd.DataFrame
):
    s = CandleStore(tmp_path)
    s.ingest(*SERIES, candles.iloc[:100], source="ccxt:binance")
    before = s.load(*SERIES)
    bad = candles.iloc[50:51].assign(open=0.0)  # a stored hour again, with a zero price: dropped
    summary = s.ingest(*SERIES, bad, source="ccxt:binance")
    assert (summary.added, summary.replaced) == (0, 0) and summary.report.counts() == {
        "nonpositive_price": 1
    }
    assert s.list_series()[0].repairs == {"nonpositive_price": 1}
    pd.testing.assert_frame_equal(s.load(*SERIES), before)


def test_a_parquet_file_with_the_wrong_schema_is_unreadable_everywhere(
    tmp_path: Path, candles: pd.DataFrame
):
    s = CandleStore(tmp_path)
    path = s.path(*SERIES)
    path.parent.mkdir(parents=True)
    candles.iloc[:10].drop(columns="volume").to_parquet(path)
    listed = s.list_series()
    assert (
        len(listed) == 1
        and "no column volume" in listed[0].error
        and "move it aside" in listed[0].error
    )
    for call in (
        lambda: s.load(*SERIES),
        lambda: s.ingest(*SERIES, candles.iloc[10:20], source="t"),
    ):
        with pytest.raises(
            DataError, match=r"is unreadable \(not a candle file: no column volume\)"
        ):
            call()
    candles.iloc[:10].assign(timestamp=candles["timestamp"].iloc[:10].astype(str)).to_parquet(path)
    assert "column timestamp of the wrong type" in s.list_series()[0].error


def test_list_series_filters_and_refuses_a_data_dir_that_is_a_file(
    tmp_path: Path, candles: pd.DataFrame
):
    s = CandleStore(tmp_path)
    hourly, four_hourly = candles.iloc[:10], candles.iloc[:40:4]
    for ex, sym, tf, df in (
        ("binance", "BTC/USDT", "1h", hourly),
        ("binance", "ETH/USDT", "1h", hourly),
        ("kraken", "BTC/USDT", "4h", four_hourly),
    ):
        s.ingest(ex, sym, tf, df, source="t")
    assert [(x.exchange, x.symbol) for x in s.list_series(symbol="BTC/USDT")] == [
        ("binance", "BTC/USDT"),
        ("kraken", "BTC/USDT"),
    ]
    assert [x.timeframe for x in s.list_series(exchange="kraken")] == ["4h"]
    assert s.list_series("binance", "BTC/USDT", "4h") == []
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    with pytest.raises(DataError, match=r"passwd is not a directory; check --data-dir"):
        CandleStore(a_file).list_series()


def test_stale_temp_files_of_killed_writes_are_removed_by_the_next_write(
    tmp_path: Path, candles: pd.DataFrame
):
    from chartrl.atomic import STALE_TMP_SECONDS

    s = CandleStore(tmp_path)
    _merge(s, candles.iloc[:10])
    folder = s.path(*SERIES).parent
    stale, fresh, other = (
        folder / n
        for n in (
            ".1h.parquet.k1ll3d_x.tmp",
            ".1h.parquet.wr1t1ng.tmp",
            ".1h.parquet.lock.old1.tmp",
        )
    )
    for p in (stale, fresh, other):
        p.write_bytes(b"PAR1 half")
    old = time.time() - STALE_TMP_SECONDS - 60
    for p in (stale, other):
        os.utime(p, (old, old))
    _merge(s, candles.iloc[:20])
    assert not stale.exists()  # left by a killed write of this file
    assert fresh.exists()  # may belong to a write in progress
    assert other.exists()  # another file's


# ---- month partitions ---------------------------------------------------------------------------


def _spy_writes(monkeypatch) -> list[Path]:
    """Record every file the store writes (and still write it)."""
    written: list[Path] = []
    real = store_mod.atomic_write_table

    def spy(table, path):
        written.append(Path(path))
        real(table, path)

    monkeypatch.setattr(store_mod, "atomic_write_table", spy)
    return written


def _month_files(s: CandleStore) -> dict[str, int]:
    folder = s.path(*SERIES).with_name("1h.months")
    return {p.stem: p.stat().st_mtime_ns for p in sorted(folder.glob("*.parquet"))}


def test_appending_one_candle_rewrites_only_the_last_month_and_the_head(
    tmp_path: Path, candles: pd.DataFrame, monkeypatch
):
    s = CandleStore(tmp_path)
    s.ingest(*SERIES, candles.iloc[:-1], source="t")  # 2020-01-01 .. 2020-05-05: five months
    before = _month_files(s)
    assert list(before) == ["2020-01", "2020-02", "2020-03", "2020-04", "2020-05"]
    written = _spy_writes(monkeypatch)
    summary = s.ingest(*SERIES, candles.iloc[-1:], source="t")
    head = s.path(*SERIES)
    assert written == [head.with_name("1h.months") / "2020-05.parquet", head]
    after = _month_files(s)
    assert {k: v for k, v in after.items() if k != "2020-05"} == {
        k: v for k, v in before.items() if k != "2020-05"
    }
    assert pq.read_metadata(head).num_rows == 0  # the head only carries the summary
    assert summary.added == 1 and summary.count == len(candles)
    pd.testing.assert_frame_equal(s.load(*SERIES), candles)
    assert s.last_timestamp(*SERIES) == candles["timestamp"].iloc[-1]


def test_a_revision_across_a_month_boundary_rewrites_both_months_only(
    tmp_path: Path, candles: pd.DataFrame, monkeypatch
):
    s = CandleStore(tmp_path)
    _merge(s, candles)
    t = candles["timestamp"]
    edge = int(t.searchsorted(pd.Timestamp("2020-03-01", tz="UTC")))
    revised = candles.iloc[edge - 2 : edge + 2].copy()
    revised["volume"] = revised["volume"] * 2 + 1  # the exchange corrected the last candles
    written = _spy_writes(monkeypatch)
    summary = _merge(s, revised, source="revision")
    months = s.path(*SERIES).with_name("1h.months")
    assert written == [months / "2020-02.parquet", months / "2020-03.parquet", s.path(*SERIES)]
    assert (summary.added, summary.replaced, summary.count) == (0, 4, len(candles))
    expected = candles.copy()
    expected.loc[edge - 2 : edge + 1, "volume"] = revised["volume"].to_numpy()
    pd.testing.assert_frame_equal(s.load(*SERIES), expected)
    part = s.load(*SERIES, start=t.iloc[edge - 1], end=t.iloc[edge])
    assert part["volume"].tolist() == revised["volume"].iloc[1:3].tolist()


def _old_single_file_store(s: CandleStore, df: pd.DataFrame) -> Path:
    """A store as chartrl wrote it before month partitions: every candle in the one file."""
    import json

    import pyarrow as pa

    from chartrl.market.series import META_KEY, updated_meta

    clean, report = validate_candles(df, "csv:old.csv", False, timeframe="1h")
    meta = updated_meta({}, *SERIES, clean, report, len(clean), 0)
    table = pa.Table.from_pandas(clean, preserve_index=False)
    table = table.replace_schema_metadata(
        {**table.schema.metadata, META_KEY: json.dumps(meta).encode()}
    )
    path = s.path(*SERIES)
    path.parent.mkdir(parents=True)
    pq.write_table(table, path, compression="zstd")
    return path


def test_an_old_single_file_store_is_read_then_migrated_without_losing_a_candle(
    tmp_path: Path, candles: pd.DataFrame, monkeypatch
):
    s = CandleStore(tmp_path)
    path = _old_single_file_store(s, candles.iloc[:-1])
    pd.testing.assert_frame_equal(s.load(*SERIES), candles.iloc[:-1])  # readable as it is
    assert s.last_timestamp(*SERIES) == candles["timestamp"].iloc[-2]
    # A migration killed before its head is written leaves the old file, still whole and readable.
    real = store_mod.atomic_write_table

    def head_fails(table, where):
        if Path(where) == path:
            raise OSError(28, "No space left on device", str(where))
        real(table, where)

    monkeypatch.setattr(store_mod, "atomic_write_table", head_fails)
    with pytest.raises(DataError, match="the stored candles are unchanged"):
        s.ingest(*SERIES, candles.iloc[-1:], source="tick")
    assert pq.read_metadata(path).num_rows == len(candles) - 1
    pd.testing.assert_frame_equal(s.load(*SERIES), candles.iloc[:-1])
    monkeypatch.setattr(store_mod, "atomic_write_table", real)
    # The next write migrates: every month file, then the head; every candle identical.
    summary = s.ingest(*SERIES, candles.iloc[-1:], source="tick")
    assert list(_month_files(s)) == ["2020-01", "2020-02", "2020-03", "2020-04", "2020-05"]
    assert pq.read_metadata(path).num_rows == 0
    pd.testing.assert_frame_equal(s.load(*SERIES), candles)
    assert summary.count == len(candles) and summary.added == 1
    assert set(summary.sources) == {"csv:old.csv", "tick"}  # the old file's history is kept
    assert sum(pq.read_metadata(p).num_rows for p in path.with_name("1h.months").iterdir()) == len(
        candles
    )


def test_a_month_written_before_a_failed_head_is_kept_and_the_summary_catches_up(
    tmp_path: Path, candles: pd.DataFrame, monkeypatch
):
    s = CandleStore(tmp_path)
    s.ingest(*SERIES, candles.iloc[:-1], source="t")
    path = s.path(*SERIES)
    real = store_mod.atomic_write_table

    def head_fails(table, where):
        if Path(where) == path:
            raise OSError(28, "No space left on device", str(where))
        real(table, where)

    monkeypatch.setattr(store_mod, "atomic_write_table", head_fails)
    with pytest.raises(
        DataError, match="months 2020-05 of BTC-USDT 1h were stored but its summary"
    ):
        s.ingest(*SERIES, candles.iloc[-1:], source="t")
    pd.testing.assert_frame_equal(s.load(*SERIES), candles)  # the candle is stored
    monkeypatch.setattr(store_mod, "atomic_write_table", real)
    s.ingest(*SERIES, candles.iloc[-1:], source="t")  # the daemon fetches it again: a no-op merge
    assert s.summary(*SERIES).count == len(candles)
    assert s.last_timestamp(*SERIES) == candles["timestamp"].iloc[-1]


def test_a_write_reads_the_batch_months_in_full_and_never_rewrites_a_month_it_did_not_read(
    tmp_path: Path, candles: pd.DataFrame, monkeypatch
):
    s = CandleStore(tmp_path)
    s.ingest(*SERIES, candles.iloc[:-1], source="t")
    months = s.path(*SERIES).with_name("1h.months")
    read_in_full: list[str] = []
    real_read = store_mod.split_months

    def spy(head, exchange, symbol, timeframe, keys):
        read_in_full.extend(sorted(k for k in keys if (months / f"{k}.parquet").exists()))
        return real_read(head, exchange, symbol, timeframe, keys)

    monkeypatch.setattr(store_mod, "split_months", spy)
    s.ingest(*SERIES, candles.iloc[-1:], source="t")
    assert read_in_full == [
        "2020-04",
        "2020-05",
    ]  # the batch's month and its neighbour, not all five
    # Months guessed from a raw batch that miss its validated candles: the whole series is read
    # before a month file is rewritten, so no stored candle of that month is lost.
    monkeypatch.setattr(s, "_batch_keys", lambda frame: {"2020-01"})
    revised = candles.iloc[-3:].assign(volume=lambda d: d["volume"] + 1)
    summary = s.ingest(*SERIES, revised, source="t")
    assert (summary.replaced, summary.count) == (3, len(candles))
    expected = pd.concat([candles.iloc[:-3], revised], ignore_index=True)
    pd.testing.assert_frame_equal(s.load(*SERIES), expected)


def test_chartrl_sim_reads_a_store_head_as_its_months(tmp_path: Path, candles: pd.DataFrame):
    from chartrl.cli.sim_cmd import load_candles

    s = CandleStore(tmp_path)
    s.ingest(*SERIES, candles, source="t")
    frame, tf = load_candles(s.path(*SERIES), "BTC/USDT", None)
    assert tf == "1h"
    pd.testing.assert_frame_equal(frame, candles)
