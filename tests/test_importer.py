"""CSV import: the real export, and a synthetic file for every format variant and fault of the family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chartrl.errors import DataError, UsageError
from chartrl.market.importer import import_csv, parse_dates, parse_unix, read_candle_csv
from chartrl.market.store import CandleStore

SERIES = ("binance", "BTC/USDT", "1h")


CDD = (
    "unix",
    "date",
    "symbol",
    "open",
    "high",
    "low",
    "close",
    "Volume BTC",
    "Volume USDT",
    "tradecount",
)
KEYS = ("unix", "date", "symbol", "open", "high", "low", "close", "vbase", "vquote", "tradecount")


def _cdd(
    df: pd.DataFrame,
    path: Path,
    *,
    banner: str | None = "https://www.CryptoDataDownload.com",
    unix: str = "ms",
    date_fmt: str = "%Y-%m-%d %H:%M:%S",
    header: tuple[str, ...] = CDD,
    keys: tuple[str, ...] = KEYS,
    newest_first: bool = True,
    symbol: str = "BTC/USDT",
) -> Path:
    """Write candles the way CryptoDataDownload does (banner, newest first, two volume columns)."""
    ms = df["timestamp"].astype("int64") // 1_000_000
    rows = []
    for i, r in enumerate(df.itertuples(index=False)):
        t = {
            "ms": str(ms.iloc[i]),
            "s": f"{ms.iloc[i] / 1000:.1f}",
            "mixed": str(ms.iloc[i]) if i % 2 else f"{ms.iloc[i] / 1000:.1f}",
        }[unix]
        fields = {
            "unix": t,
            "date": r.timestamp.strftime(date_fmt),
            "symbol": symbol,
            "open": f"{r.open:.2f}",
            "high": f"{r.high:.2f}",
            "low": f"{r.low:.2f}",
            "close": f"{r.close:.2f}",
            "vbase": f"{r.volume:.4f}",
            "vquote": f"{r.volume * r.close:.2f}",
            "tradecount": "NULL",
        }
        rows.append(",".join(fields[k] for k in keys))
    if newest_first:
        rows.reverse()
    text = ([banner] if banner else []) + [",".join(header)] + rows
    path.write_text("\n".join(text) + "\n")
    return path


@pytest.fixture
def restore_logging():
    """The CLI configures logging onto capsys's stream; put the defaults back afterwards."""
    import logging

    import structlog

    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


def _rounded(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(
        **{c: df[c].round(2) for c in ("open", "high", "low", "close")},
        volume=df["volume"].round(4),
    )


def _import(path: Path, tmp_path: Path, **kw):
    store = CandleStore(tmp_path / "data")
    args = {**dict(zip(("exchange", "symbol", "timeframe"), SERIES, strict=True)), **kw}
    return store, import_csv(path, store, **args)


@pytest.fixture
def small(candles: pd.DataFrame) -> pd.DataFrame:
    return candles.iloc[:120].reset_index(drop=True)


def test_shared_btc_export(shared_btc_csv: Path, tmp_path: Path):
    store, s = _import(shared_btc_csv, tmp_path)
    r = s.report
    assert 33_300 <= s.count <= 33_500  # ~33,400 distinct hours
    assert s.first == pd.Timestamp("2017-08-17 05:00", tz="UTC")  # 04:00 is the implausible one
    assert s.last == pd.Timestamp("2021-06-10 00:00", tz="UTC")
    counts = r.counts()
    # ~2,600 hours exported twice: rounding-only copies are duplicates, differing ones conflicts
    assert 2_500 <= counts["duplicate"] + counts["conflicting_duplicate"] <= 2_700
    # The oldest row (open = high = 16,199.91 while its own and the next close are near 4,300) is
    # caught by price_spike: its high is ~3.7x both.
    assert counts["price_spike"] == 1 and "16199.91" in r.repairs["price_spike"].examples[0]
    assert set(counts) == {"duplicate", "conflicting_duplicate", "price_spike"}
    assert s.gaps.count >= 5 and s.gaps.largest == 4  # gaps of up to 5 hours = 4 candles missing
    assert any("disagrees" in n for n in r.notes)  # its date column lags unix by 4h in places
    df = store.load(*SERIES)
    assert df["timestamp"].is_monotonic_increasing and df["timestamp"].is_unique
    assert (df[["open", "high", "low", "close"]] > 0).all().all()
    # a newer export of the same hours: the precise (8-decimal) copy of a duplicated hour won
    row = df[df["timestamp"] == pd.Timestamp("2020-08-02 02:00", tz="UTC")].iloc[0]
    assert row["open"] == 11942.54 and row["volume"] == pytest.approx(3785.415559)


def test_banner_url_capitalised_columns_and_ms(small, tmp_path):
    header = (
        "Unix Timestamp",
        "Date",
        "Symbol",
        "Open",
        "High",
        "Low",
        "Close",
        "Volume BTC",
        "Volume USDT",
        "tradecount",
    )
    p = _cdd(small, tmp_path / "a.csv", header=header)
    _, s = _import(p, tmp_path)
    assert s.count == len(small) and s.report.repairs == {}
    pd.testing.assert_frame_equal(CandleStore(tmp_path / "data").load(*SERIES), _rounded(small))


def test_created_on_banner_seconds_and_am_pm_dates(small, tmp_path):
    p = _cdd(
        small,
        tmp_path / "b.csv",
        banner="Created on 2021-06-10 01:00:00",
        unix="s",
        date_fmt="%Y-%m-%d %I-%p",
    )
    store, s = _import(p, tmp_path)
    assert s.count == len(small) and s.report.repairs == {}
    pd.testing.assert_series_equal(store.load(*SERIES)["timestamp"], small["timestamp"])


def test_ms_and_seconds_decided_per_row(small, tmp_path):
    p = _cdd(small, tmp_path / "c.csv", unix="mixed")
    store, s = _import(p, tmp_path)
    assert s.count == len(small)
    pd.testing.assert_series_equal(store.load(*SERIES)["timestamp"], small["timestamp"])
    got = parse_unix(pd.Series(["1502942400.0", "1502942400000", "1502942400000000", "abc", "12"]))
    assert (
        list(got.iloc[:3]) == [pd.Timestamp("2017-08-17 04:00", tz="UTC")] * 3
        and got.iloc[3:].isna().all()
    )


@pytest.mark.parametrize("fmt", ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %I-%p", "%Y-%m-%dT%H:%M:%SZ"])
def test_date_column_alone(small, tmp_path, fmt):
    p = _cdd(
        small,
        tmp_path / "d.csv",
        header=("Date", "Symbol", "Open", "High", "Low", "Close", "Volume BTC"),
        keys=("date", "symbol", "open", "high", "low", "close", "vbase"),
        date_fmt=fmt,
    )
    store, s = _import(p, tmp_path)
    assert s.count == len(small)
    pd.testing.assert_series_equal(store.load(*SERIES)["timestamp"], small["timestamp"])


def test_both_date_formats_in_one_column():
    got = parse_dates(
        pd.Series(
            [
                "2021-06-10 00:00:00",
                "2017-08-17 04-AM",
                "2017-08-17 12-PM",
                "2021-06-10T01:00:00+02:00",
                "soon",
            ]
        )
    )
    want = ["2021-06-10 00:00", "2017-08-17 04:00", "2017-08-17 12:00", "2021-06-09 23:00"]
    assert list(got.iloc[:4]) == [pd.Timestamp(w, tz="UTC") for w in want] and pd.isna(got.iloc[4])


def test_nulls_zero_prices_and_duplicates_are_repaired_by_named_rules(small, tmp_path):
    p = _cdd(small, tmp_path / "e.csv", newest_first=False)
    lines = p.read_text().splitlines()
    data = lines[2:]
    f = data[3].split(",")
    f[6] = "NULL"  # close missing
    data[3] = ",".join(f)
    for i in (0, 1):  # zero prices in early rows
        f = data[i].split(",")
        f[3:7] = ["0", "0", "0", "0"]
        data[i] = ",".join(f)
    f = data[50].split(",")
    f[3] = f"{float(f[3]) + 5:.2f}"  # a conflicting second copy of hour 50
    f[4] = f"{max(float(f[4]), float(f[3])):.2f}"
    dup_conflict = ",".join(f)
    data += [data[40], data[41], dup_conflict]  # two plain duplicates, one conflict
    p.write_text("\n".join(lines[:2] + data) + "\n")
    store, s = _import(p, tmp_path)
    assert s.report.counts() == {
        "nan": 1,
        "nonpositive_price": 2,
        "duplicate": 2,
        "conflicting_duplicate": 1,
    }
    assert "line 6 " in s.report.repairs["nan"].examples[0]  # banner, header, rows 0..3 -> line 6
    assert s.count == len(small) - 3
    df = store.load(*SERIES)
    kept = df.loc[df["timestamp"] == small["timestamp"].iloc[50], "open"].iloc[0]
    assert kept == pytest.approx(round(small["open"].iloc[50], 2) + 5)  # the later copy wins


def test_strict_import_refuses_and_stores_nothing(small, tmp_path):
    p = _cdd(small, tmp_path / "f.csv")
    p.write_text(p.read_text() + p.read_text().splitlines()[2] + "\n")  # one duplicated row
    with pytest.raises(DataError, match="duplicate 1"):
        _import(p, tmp_path, strict=True)
    assert not CandleStore(tmp_path / "data").path(*SERIES).exists()


@pytest.mark.parametrize("unit", ["ms", "s", "iso"])
def test_plain_csv(small, tmp_path, unit):
    ms = small["timestamp"].astype("int64") // 1_000_000
    ts = {
        "ms": ms.astype(str),
        "s": (ms // 1000).astype(str),
        "iso": small["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }[unit]
    plain = small.assign(timestamp=ts)
    p = tmp_path / "plain.csv"
    plain.to_csv(p, index=False, float_format="%.10f")
    store, s = _import(p, tmp_path)
    assert s.count == len(small) and s.report.repairs == {}
    pd.testing.assert_frame_equal(store.load(*SERIES), small, atol=1e-6)


def test_other_quote_and_volume_from_columns(small, tmp_path):
    p = _cdd(
        small,
        tmp_path / "eth.csv",
        symbol="ETHEUR",
        header=(
            "unix",
            "date",
            "symbol",
            "open",
            "high",
            "low",
            "close",
            "Volume ETH",
            "Volume EUR",
            "tradecount",
        ),
    )
    store = CandleStore(tmp_path / "data")
    s = import_csv(p, store, "kraken", "ETH/EUR", "1h")
    assert np.allclose(store.load("kraken", "ETH/EUR", "1h")["volume"], small["volume"].round(4))
    assert s.count == len(small)
    old = _cdd(
        small,
        tmp_path / "old.csv",
        keys=KEYS[:-1],
        header=(
            "unix",
            "date",
            "symbol",
            "open",
            "high",
            "low",
            "close",
            "Volume From",
            "Volume To",
        ),
    )
    assert read_candle_csv(old, "BTC/USDT").columns["volume"] == "Volume From"
    quote_only = _cdd(
        small,
        tmp_path / "q.csv",
        keys=KEYS[:-1],
        symbol="BTCUSD",
        header=(
            "unix",
            "date",
            "symbol",
            "open",
            "high",
            "low",
            "close",
            "Volume XBT",
            "Volume USD",
        ),
    )
    assert (
        read_candle_csv(quote_only, "BTC/USD").columns["volume"] == "Volume XBT"
    )  # base is the non-quote one


def test_not_a_candle_csv_names_file_and_missing_columns(tmp_path):
    p = tmp_path / "people.csv"
    p.write_text("name,age\nann,3\n")
    with pytest.raises(DataError) as exc:
        read_candle_csv(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)
    q = tmp_path / "half.csv"
    q.write_text("timestamp,open,close\n1,2,3\n")
    with pytest.raises(DataError, match=r"missing columns high, low, volume"):
        read_candle_csv(q)
    b = tmp_path / "bin.csv"
    b.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DataError, match="bin.csv"):
        read_candle_csv(b)
    with pytest.raises(
        UsageError, match="does not exist"
    ):  # a wrong path: usage (exit 2), not bad data
        read_candle_csv(tmp_path / "nope.csv")
    with pytest.raises(UsageError, match="is a directory; pass one candle CSV file"):
        read_candle_csv(tmp_path)
    semi = tmp_path / "semi.csv"
    semi.write_text("timestamp;open;high;low;close;volume\n2021-01-01;1;2;1;2;3\n")
    with pytest.raises(DataError, match="separated by semicolons: save it with commas"):
        read_candle_csv(semi)


def test_wrong_symbol_or_timeframe_refused(small, tmp_path):
    p = _cdd(small, tmp_path / "g.csv", symbol="ETH/USDT")
    with pytest.raises(DataError, match="holds ETH/USDT candles, not BTC/USDT"):
        _import(p, tmp_path)
    daily = small.iloc[::24].reset_index(drop=True)
    q = _cdd(daily, tmp_path / "h.csv")
    with pytest.raises(DataError, match="holds 1d candles.*--timeframe 1d"):
        _import(q, tmp_path)


def test_cli_import_then_data(small, tmp_path, capsys, restore_logging):
    from chartrl.cli import main

    def cli(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out = capsys.readouterr()
        return int(exit_.value.code or 0), out.out, out.err

    p = _cdd(small.drop(index=[30, 31]), tmp_path / "cli.csv")
    code, out, err = cli(
        "import", str(p), "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h"
    )
    assert code == 0, err
    assert f"{len(small) - 2:,} valid candles" in out
    code, out, err = cli("data")
    assert code == 0, err
    assert "binance" in out and "BTC/USDT" in out and f"{len(small) - 2:,}" in out
    assert "2 missing after" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    code, out, err = cli("import", str(bad), "--exchange", "binance")
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err
    assert err.count("\n") == 1 and "bad.csv" in err
    code, out, err = cli("import", str(p), "--strict")  # the same rows again: nothing to repair
    assert code == 0, err


def test_file_without_a_usable_row_is_an_error_and_stores_nothing(small, tmp_path):
    store, _ = _import(_cdd(small.iloc[:30], tmp_path / "ok.csv"), tmp_path)
    before = store.path(*SERIES).read_bytes()
    header_only = tmp_path / "header.csv"
    header_only.write_text("timestamp,open,high,low,close,volume\n")
    with pytest.raises(DataError, match="header.csv has a header but no candle rows"):
        _import(header_only, tmp_path)
    junk = tmp_path / "junk.csv"
    junk.write_text("timestamp,open,high,low,close,volume\nabc,1,2,0.5,1.5,3\n,1,2,0.5,1.5,3\n")
    with pytest.raises(
        DataError, match=r"junk.csv: none of its 2 rows is a usable candle \(bad_timestamp 2"
    ):
        _import(junk, tmp_path)
    assert store.path(*SERIES).read_bytes() == before


def test_integer_prices_parse_without_warnings(tmp_path):
    import warnings

    p = tmp_path / "ints.csv"
    p.write_text(
        "timestamp,open,high,low,close,volume\n2021-01-01,1,2,1,2,3\n2021-01-01 01:00,2,3,1,2,3\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pandas FutureWarning would reach the user's terminal
        parsed = read_candle_csv(p)
    assert parsed.frame["priority"].tolist() == [0, 0]


def test_cli_data_lists_good_series_and_flags_a_broken_file(
    small, tmp_path, capsys, restore_logging, monkeypatch
):
    from chartrl.cli import main

    monkeypatch.setenv("CHARTRL_DATA_DIR", str(tmp_path / "data"))
    store, _ = _import(_cdd(small, tmp_path / "ok.csv"), tmp_path)
    broken = store.path("binance", "BTC/USDT", "4h")
    broken.write_bytes(b"truncated")
    with pytest.raises(SystemExit) as exit_:
        main(["data"])
    out = capsys.readouterr()
    assert exit_.value.code == 1
    assert f"{len(small):,}" in out.out and "unusable" in out.out  # the good series is still shown
    assert out.err.startswith("error: ") and str(broken) in out.err and out.err.count("\n") == 1


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from chartrl.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out = capsys.readouterr()
    return int(exit_.value.code or 0), out.out, out.err


def test_cli_import_says_replaced_and_a_missing_file_is_usage(
    small, tmp_path, capsys, restore_logging
):
    first = _cdd(small, tmp_path / "first.csv")
    assert _cli(capsys, "import", str(first))[0] == 0
    revised = _cdd(
        small.assign(close=small["close"] + 1, high=small["high"] + 1), tmp_path / "revised.csv"
    )
    code, out, err = _cli(capsys, "import", str(revised))
    assert code == 0, err
    assert (
        f"replaced {len(small):,} stored candles by rule replaced_stored" in out
        and "dropped" not in out
    )
    code, out, err = _cli(capsys, "import", str(tmp_path / "nonexistent.csv"))
    assert code == 2 and "nonexistent.csv does not exist" in err and err.count("\n") == 1


def test_cli_data_filters_and_a_data_dir_that_is_a_file(small, tmp_path, capsys, restore_logging):
    store = CandleStore(tmp_path / "data")
    store.ingest(*SERIES, small, source="t")
    store.ingest("kraken", "ETH/EUR", "1h", small, source="t")
    capsys.readouterr()  # the ingests' log lines
    code, out, err = _cli(capsys, "data", "--symbol", "ETH/EUR")
    assert code == 0, err
    assert "kraken ETH/EUR 1h" in out and "binance BTC/USDT 1h" not in out
    code, out, _ = _cli(capsys, "data", "--exchange", "binance", "--timeframe", "4h")
    assert code == 0 and "no binance 4h candles stored" in out
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    code, out, err = _cli(capsys, "data", "--data-dir", str(a_file))
    assert (
        code == 1
        and f"error: {a_file} is not a directory" in err
        and "no candles stored" not in out
    )
