"""What a request to the loopback exchange emulator costs through ccxt, against a bare ping.

Reference (measured in the same run): ``fetch_time`` through ccxt (HTTP round trip + ccxt's
signing-free request path + the emulator's smallest route). Figures: a 1000-candle klines page
(the fetcher's unit of work), a signed ``fetch_balance``, a market order round trip, and a
``fetch_order`` with 200 orders on the book. Printed as ratios to the reference.
"""

from __future__ import annotations

import statistics
import time

from chartrl.config.settings import ExchangeSettings
from chartrl.market.exchange import make_exchange
from chartrl.testing.exchange_sim import ExchangeSim
from chartrl.testing.synthetic import synthetic_candles

REPEAT = 30


def _median_ms(fn, repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    candles = synthetic_candles(5000, seed=1)
    with ExchangeSim(candles, balances={"USDT": 1_000_000}) as sim:
        ex = make_exchange(
            ExchangeSettings(
                id="binance", api_url=sim.url, api_key="sim-api-key", api_secret="sim-api-secret"
            )
        )
        ex.load_markets()
        since = int(candles["timestamp"].iloc[1000].value // 1_000_000)
        ref = _median_ms(ex.fetch_time)
        page = _median_ms(lambda: ex.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=1000))
        balance = _median_ms(ex.fetch_balance)
        order = _median_ms(lambda: ex.create_order("BTC/USDT", "market", "buy", 0.001))
        for _ in range(200):
            ex.create_order("BTC/USDT", "market", "buy", 0.001)
        query = _median_ms(lambda: ex.fetch_order("1", "BTC/USDT"))
    print(f"reference fetch_time: {ref:.2f} ms (median of {REPEAT})")
    print(f"klines page (1000): {page:.2f} ms = {page / ref:.1f}x reference")
    print(f"fetch_balance:      {balance:.2f} ms = {balance / ref:.1f}x reference")
    print(f"market order:       {order:.2f} ms = {order / ref:.1f}x reference")
    print(f"fetch_order (230 orders): {query:.2f} ms = {query / ref:.1f}x reference")
    print(
        f"RESULT ref_ms={ref:.2f} klines_page_x={page / ref:.2f} balance_x={balance / ref:.2f} order_x={order / ref:.2f} fetch_order_x={query / ref:.2f}"
    )


if __name__ == "__main__":
    main()
