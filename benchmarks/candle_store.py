"""What the daemon's every-candle store update costs, against rewriting the whole series.

Series: a year of 1m candles (525,600, as in issue 12 item 17) in the month-partitioned store.
Reference (measured in the same run): what the single-file store did on every tick, an atomic
fsynced ``pq.write_table`` of the whole series (after reading it). Figures: one-candle ingest
(validation with stored context + merge + atomic fsynced write of the touched month and the head),
the bytes it writes per appended candle against the whole-series file, a no-op ingest (the candle
is already stored), a full ``load``, and a CSV import of 35k hourly synthetic rows in the
CryptoDataDownload layout.

    PYTHONPATH=src python benchmarks/candle_store.py [candles]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from chartrl.market import store as store_mod
from chartrl.market.importer import import_csv
from chartrl.market.store import CandleStore, atomic_write_table
from chartrl.testing.synthetic import synthetic_candles

N = 525_600  # a year of 1m candles
N_CSV = 35_000
REPEAT = 5
SERIES = ("binance", "BTC/USDT", "1m")


def _best(fn, repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) if repeat < 3 else statistics.median(times)


def _write_cdd_csv(path: Path, rows) -> None:
    with open(path, "w") as fh:
        fh.write(
            "https://www.CryptoDataDownload.com\nunix,date,symbol,open,high,low,close,Volume BTC,Volume USDT\n"
        )
        for r in rows.itertuples(index=False):
            ms = int(r.timestamp.value // 1_000_000)
            fh.write(
                f"{ms},{r.timestamp:%Y-%m-%d %H:%M:%S},BTC/USDT,{r.open:.2f},{r.high:.2f},{r.low:.2f},{r.close:.2f},{r.volume:.4f},{r.volume * r.close:.2f}\n"
            )


def main() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    n = int(sys.argv[1]) if len(sys.argv) > 1 else N
    df = synthetic_candles(n + REPEAT + 1, seed=1, timeframe="1m")
    written: list[int] = []
    real = store_mod.atomic_write_table

    def counting(table, path):
        real(table, path)
        written.append(Path(path).stat().st_size)

    with tempfile.TemporaryDirectory() as tmp:
        store = CandleStore(tmp)
        store.ingest(*SERIES, df.iloc[:n], source="bench")
        scratch = Path(tmp) / "full.parquet"

        def full_rewrite() -> (
            None
        ):  # the single-file store's tick: read everything, write everything
            table = store._read(store.path(*SERIES), *SERIES)
            atomic_write_table(table, scratch)

        reference = _best(full_rewrite)
        full_bytes = scratch.stat().st_size
        state = {"i": n}

        def one_candle() -> None:
            store.ingest(*SERIES, df.iloc[state["i"] : state["i"] + 1], source="bench")
            state["i"] += 1

        store_mod.atomic_write_table = counting
        try:
            tick = _best(one_candle)
            appended = state["i"] - n
            per_candle = sum(written) / appended
        finally:
            store_mod.atomic_write_table = real
        noop = _best(lambda: store.ingest(*SERIES, df.iloc[n - 1 : n], source="bench"))
        load = _best(lambda: store.load(*SERIES))
        months = len(list(store.path(*SERIES).with_name("1m.months").glob("*.parquet")))

        hourly = synthetic_candles(N_CSV, seed=1)
        csv = Path(tmp) / "cdd.csv"
        _write_cdd_csv(csv, hourly.iloc[::-1])
        imp = _best(
            lambda: import_csv(csv, CandleStore(Path(tmp) / "imp"), "binance", "BTC/USDT", "1h"),
            repeat=1,
        )

    print(
        f"series: {n:,} 1m candles in {months} month files; reference = atomic read+write of the "
        f"whole series {reference * 1000:.1f} ms, {full_bytes / 1e6:.2f} MB"
    )
    print(f"one-candle ingest (validate+merge+month+head write): {tick * 1000:.1f} ms")
    print(f"  bytes written per appended candle:                {per_candle / 1e6:.3f} MB")
    print(f"no-op ingest (already stored, no rewrite):          {noop * 1000:.1f} ms")
    print(f"load whole series:                                  {load * 1000:.1f} ms")
    print(f"import {N_CSV:,}-row hourly CSV:                       {imp * 1000:.1f} ms")
    print(
        f"RESULT candles={n} bytes_per_append={per_candle:.0f} full_rewrite_bytes={full_bytes} "
        f"append_ms={tick * 1000:.1f} full_rewrite_ms={reference * 1000:.1f} "
        f"append_ratio={tick / reference:.2f} noop_ms={noop * 1000:.1f} load_ms={load * 1000:.1f} "
        f"import_ms={imp * 1000:.1f}"
    )


if __name__ == "__main__":
    main()
