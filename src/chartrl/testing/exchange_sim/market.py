"""Public market-data endpoints: ping, time, exchangeInfo, klines, tickers, depth.

Answers follow the Binance spot REST API field by field for what ccxt's ``binance`` class reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from chartrl.testing.exchange_sim.protocol import ApiError, fmt, int_param, limit_param, mandatory
from chartrl.testing.exchange_sim.series import CandleSeries

# Binance interval names equal ccxt's timeframe names for the ones Binance supports.
_INTERVALS = {
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
}


@dataclass(frozen=True)
class SymbolRules:
    """The symbol's exchange filters. Defaults are Binance's BTCUSDT values."""

    tick_size: Decimal = Decimal("0.01")
    min_price: Decimal = Decimal("0.01")
    max_price: Decimal = Decimal("1000000")
    step_size: Decimal = Decimal("0.00001")
    min_qty: Decimal = Decimal("0.00001")
    max_qty: Decimal = Decimal("9000")
    market_max_qty: Decimal = Decimal("100")
    min_notional: Decimal = Decimal("5")
    max_notional: Decimal = Decimal("9000000")

    def filters(self) -> list[dict[str, Any]]:
        return [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(self.min_price),
                "maxPrice": fmt(self.max_price),
                "tickSize": fmt(self.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(self.min_qty),
                "maxQty": fmt(self.max_qty),
                "stepSize": fmt(self.step_size),
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": fmt(self.market_max_qty),
                "stepSize": "0.00000000",
            },
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": 10,
                "maxTrailingAboveDelta": 2000,
                "minTrailingBelowDelta": 10,
                "maxTrailingBelowDelta": 2000,
            },
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": "5",
                "bidMultiplierDown": "0.2",
                "askMultiplierUp": "5",
                "askMultiplierDown": "0.2",
                "avgPriceMins": 5,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt(self.min_notional),
                "applyMinToMarket": True,
                "maxNotional": fmt(self.max_notional),
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ]


class Market:
    """One symbol's public data as of the emulator's clock."""

    def __init__(self, series: CandleSeries, base: str, quote: str, rules: SymbolRules) -> None:
        self.series = series
        self.base = base
        self.quote = quote
        self.symbol_id = base + quote
        self.rules = rules

    # -- helpers shared with the trading engine ------------------------------------------------
    def check_symbol(self, params: dict[str, str], required: bool = True) -> None:
        symbol = mandatory(params, "symbol") if required else params.get("symbol")
        if symbol is not None and symbol != self.symbol_id:
            raise ApiError(400, -1121, "Invalid symbol.")

    def symbol_info(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol_id,
            "status": "TRADING",
            "baseAsset": self.base,
            "baseAssetPrecision": 8,
            "quoteAsset": self.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            # Only what the emulator executes: ccxt refuses other types before sending them.
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
            "icebergAllowed": False,
            "ocoAllowed": False,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": self.rules.filters(),
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": [
                "NONE",
                "EXPIRE_TAKER",
                "EXPIRE_MAKER",
                "EXPIRE_BOTH",
            ],
        }

    # -- endpoints ----------------------------------------------------------------------------
    def ping(self, _params: dict[str, str], _now: int) -> dict[str, Any]:
        return {}

    def time(self, _params: dict[str, str], now: int) -> dict[str, Any]:
        return {"serverTime": now}

    def exchange_info(self, params: dict[str, str], now: int) -> dict[str, Any]:
        self.check_symbol(params, required=False)
        return {
            "timezone": "UTC",
            "serverTime": now,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 61000,
                },
            ],
            "exchangeFilters": [],
            "symbols": [self.symbol_info()],
        }

    def klines(self, params: dict[str, str], now: int) -> list[list[Any]]:
        """Binance semantics: open time within [startTime, endTime]; with only endTime (or no
        bound) the latest ``limit``, otherwise the first ``limit``; never a candle not yet open."""
        self.check_symbol(params)
        interval = mandatory(params, "interval")
        if interval not in _INTERVALS:
            raise ApiError(400, -1120, "Invalid interval.")
        if interval != self.series.timeframe:
            # A different interval would need resampling the emulator does not do; say so loudly.
            raise ApiError(
                400, -1120, f"Invalid interval. (the emulator serves {self.series.timeframe} only)"
            )
        limit = limit_param(params, 500, 1000)
        start = int_param(params, "startTime")
        end = int_param(params, "endTime")
        if start is not None and end is not None and start > end:
            raise ApiError(400, -1023, "Start time is greater than end time.")
        s = self.series
        hi_t = now if end is None else min(end, now)
        i_last = s.index_at(hi_t)
        if i_last < 0:
            return []
        if start is None:
            i_first = max(i_last - limit + 1, 0)
        else:
            i_first = int(s.open_ms.searchsorted(start, side="left"))
            i_last = min(i_last, i_first + limit - 1)
        return [self._kline(i, now) for i in range(i_first, i_last + 1)]

    def _kline(self, i: int, now: int) -> list[Any]:
        o, hi, lo, c, v, _closed = self.series.candle_as_of(i, now)
        t = int(self.series.open_ms[i])
        quote_volume = v * (o + c) / 2
        return [
            t,
            fmt(o),
            fmt(hi),
            fmt(lo),
            fmt(c),
            fmt(v),
            t + self.series.tf_ms - 1,
            fmt(quote_volume),
            int(v * 10) + 1,
            fmt(v / 2),
            fmt(quote_volume / 2),
            "0",
        ]

    def _last(self, now: int) -> float:
        price = self.series.price_at(now)
        if price is None:
            raise ApiError(400, -1013, "Market is closed.")
        return price

    def ticker_price(self, params: dict[str, str], now: int) -> Any:
        self.check_symbol(params, required=False)
        row = {"symbol": self.symbol_id, "price": fmt(self._last(now))}
        return row if "symbol" in params else [row]

    def avg_price(self, params: dict[str, str], now: int) -> dict[str, Any]:
        self.check_symbol(params)
        return {"mins": 5, "price": fmt(self._last(now)), "closeTime": now}

    def book_ticker(self, params: dict[str, str], now: int) -> Any:
        self.check_symbol(params, required=False)
        last = Decimal(fmt(self._last(now)))
        tick = self.rules.tick_size
        row = {
            "symbol": self.symbol_id,
            "bidPrice": fmt(last - tick),
            "bidQty": "1.00000000",
            "askPrice": fmt(last),
            "askQty": "1.00000000",
        }
        return row if "symbol" in params else [row]

    def ticker_24hr(self, params: dict[str, str], now: int) -> Any:
        self.check_symbol(params, required=False)
        s = self.series
        last = self._last(now)
        i_now = s.index_at(now)
        i_from = max(s.index_at(now - 86_400_000), 0)
        rows = [s.candle_as_of(i, now) for i in range(i_from, i_now + 1)]
        open_ = rows[0][0]
        high = max(r[1] for r in rows)
        low = min(r[2] for r in rows)
        volume = sum(r[4] for r in rows)
        tick = float(self.rules.tick_size)
        row = {
            "symbol": self.symbol_id,
            "priceChange": fmt(abs(last - open_)) if last >= open_ else "-" + fmt(open_ - last),
            "priceChangePercent": f"{(last / open_ - 1) * 100:.3f}",
            "weightedAvgPrice": fmt((high + low + last) / 3),
            "prevClosePrice": fmt(open_),
            "lastPrice": fmt(last),
            "lastQty": "0.01000000",
            "bidPrice": fmt(max(last - tick, tick)),
            "bidQty": "1.00000000",
            "askPrice": fmt(last),
            "askQty": "1.00000000",
            "openPrice": fmt(open_),
            "highPrice": fmt(high),
            "lowPrice": fmt(low),
            "volume": fmt(volume),
            "quoteVolume": fmt(volume * last),
            "openTime": now - 86_400_000,
            "closeTime": now,
            "firstId": 1,
            "lastId": 1 + len(rows),
            "count": len(rows),
        }
        return row if "symbol" in params else [row]

    def depth(self, params: dict[str, str], now: int) -> dict[str, Any]:
        """A synthetic book: 1-tick spread around the last price, levels one tick apart."""
        self.check_symbol(params)
        limit = limit_param(params, 100, 5000)
        last = Decimal(fmt(self._last(now)))
        tick = self.rules.tick_size
        n = min(limit, 100)
        bids = [[fmt(last - tick * (k + 1)), fmt(Decimal("0.5") * (k + 1))] for k in range(n)]
        asks = [[fmt(last + tick * k), fmt(Decimal("0.5") * (k + 1))] for k in range(n)]
        return {"lastUpdateId": now, "bids": bids, "asks": asks}
