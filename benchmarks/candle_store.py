"""What the daemon's every-candle store update costs, against a bare Parquet read+write.

Reference (measured in the same run): ``pq.read_table`` + ``pq.write_table`` of the same series.
Figures: one-candle ingest (validation with stored context + merge + atomic fsynced write), a
no-op ingest (the candle is already stored: nothing is rewritten), a full ``load``, and a CSV
import of 35k synthetic rows in the CryptoDataDownload layout. Printed as ratios to the reference.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from chartrl.market.importer import import_csv
from chartrl.market.store import CandleStore
from chartrl.testing.synthetic import synthetic_candles

N = 35_000
REPEAT = 5
SERIES = ("binance", "BTC/USDT", "1h")


def _best(fn, repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) if repeat < 3 else statistics.median(times)


def main() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    df = synthetic_candles(N + REPEAT + 1, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        store = CandleStore(tmp)
        store.ingest(*SERIES, df.iloc[:N], source="bench")
        path = store.path(*SERIES)
        scratch = Path(tmp) / "ref.parquet"

        reference = _best(lambda: pq.write_table(pq.read_table(path), scratch, compression="zstd"))
        state = {"i": N}

        def one_candle() -> None:
            store.ingest(*SERIES, df.iloc[state["i"] : state["i"] + 1], source="bench")
            state["i"] += 1

        tick = _best(one_candle)
        noop = _best(lambda: store.ingest(*SERIES, df.iloc[N - 1 : N], source="bench"))
        load = _best(lambda: store.load(*SERIES))

        csv = Path(tmp) / "cdd.csv"
        rows = df.iloc[:N].iloc[::-1]
        with open(csv, "w") as fh:
            fh.write(
                "https://www.CryptoDataDownload.com\nunix,date,symbol,open,high,low,close,Volume BTC,Volume USDT\n"
            )
            for r in rows.itertuples(index=False):
                ms = int(r.timestamp.value // 1_000_000)
                fh.write(
                    f"{ms},{r.timestamp:%Y-%m-%d %H:%M:%S},BTC/USDT,{r.open:.2f},{r.high:.2f},{r.low:.2f},{r.close:.2f},{r.volume:.4f},{r.volume * r.close:.2f}\n"
                )
        imp = _best(lambda: import_csv(csv, CandleStore(Path(tmp) / "imp"), *SERIES), repeat=1)

    print(f"series: {N:,} hourly candles; reference = parquet read+write {reference * 1000:.1f} ms")
    print(f"one-candle ingest (validate+merge+atomic write): {tick / reference:.2f}x reference")
    print(f"no-op ingest (already stored, no rewrite):       {noop / reference:.2f}x reference")
    print(f"load whole series:                               {load / reference:.2f}x reference")
    print(f"import {N:,}-row CSV:                             {imp / reference:.2f}x reference")
    print(
        f"RESULT tick_ratio={tick / reference:.2f} noop_ratio={noop / reference:.2f} load_ratio={load / reference:.2f} import_ratio={imp / reference:.2f}"
    )


if __name__ == "__main__":
    main()
