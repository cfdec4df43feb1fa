"""The account and its matching engine: balances, orders, fills from the emulator's candles.

Fill model (documented in docs/emulator.md):
- MARKET orders fill at the open of the candle the clock is in ("open", the backtest's fill
  price; ``market_price="now"`` uses the price path instead) moved by ``slippage`` against the
  taker and rounded to the tick; taker fee.
- LIMIT orders that cross on arrival fill like a taker at the better of the limit and that price;
  otherwise they rest and fill at their limit price (maker fee) once the candle price path
  reaches them. IOC/FOK that do not cross expire. LIMIT_MAKER that would cross is rejected.
- ``parts > 1`` splits every execution into that many fills: the first now, one more on each
  later signed request (a device to exercise partial-fill handling).
- Commission: ``commission="binance"`` charges it in the asset received (base on buys, quote on
  sells), as Binance does without BNB; ``"quote"`` charges it in the quote on both sides, as the
  backtest's fill model does.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any

from chartrl.logs import get_logger
from chartrl.testing.exchange_sim.market import Market
from chartrl.testing.exchange_sim.orders import ZERO, Order, Trade
from chartrl.testing.exchange_sim.protocol import (
    EIGHT,
    ApiError,
    decimal_param,
    floor_to,
    fmt,
    int_param,
    limit_param,
    mandatory,
)

_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
log = get_logger("chartrl.exchange_sim.trading")


def _filter(name: str) -> ApiError:
    return ApiError(400, -1013, f"Filter failure: {name}")


def _insufficient() -> ApiError:
    return ApiError(400, -2010, "Account has insufficient balance for requested action.")


class Engine:
    def __init__(
        self,
        market: Market,
        balances: dict[str, float],
        fee: float,
        slippage: float = 0.0,
        parts: int = 1,
        commission: str = "binance",
        market_price: str = "open",
        on_change: Callable[[], None] | None = None,
    ) -> None:
        if commission not in ("binance", "quote"):
            raise ValueError(f"commission must be 'binance' or 'quote', got {commission!r}")
        if market_price not in ("open", "now"):
            raise ValueError(f"market_price must be 'open' or 'now', got {market_price!r}")
        if parts < 1:
            raise ValueError(f"partial_fills must be >= 1, got {parts}")
        self.market = market
        self.fee = Decimal(str(fee))
        self.slippage = Decimal(str(slippage))
        self.parts = parts
        self.commission = commission
        self.market_price = market_price
        self.on_change = on_change or (lambda: None)
        self.free: dict[str, Decimal] = {a: Decimal(str(v)) for a, v in balances.items()}
        self.locked: dict[str, Decimal] = {a: ZERO for a in self.free}
        for asset in (market.base, market.quote):
            self.free.setdefault(asset, ZERO)
            self.locked.setdefault(asset, ZERO)
        self.orders: list[Order] = []
        self.trades: list[Trade] = []
        self.next_order_id = 1
        self.next_trade_id = 1

    # -- state -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "balances": {
                a: {"free": str(self.free[a]), "locked": str(self.locked[a])}
                for a in sorted(self.free)
            },
            "orders": [o.to_state() for o in self.orders],
            "trades": [t.to_state() for t in self.trades],
            "next_order_id": self.next_order_id,
            "next_trade_id": self.next_trade_id,
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.free = {a: Decimal(v["free"]) for a, v in data["balances"].items()}
        self.locked = {a: Decimal(v["locked"]) for a, v in data["balances"].items()}
        self.orders = [Order.from_state(o) for o in data["orders"]]
        self.trades = [Trade.from_state(t) for t in data["trades"]]
        self.next_order_id = int(data["next_order_id"])
        self.next_trade_id = int(data["next_trade_id"])

    # -- prices ------------------------------------------------------------------------------
    def _taker_price(self, side: str, now: int, reference: str) -> Decimal:
        """What a taker pays now: ``reference`` "open" (of the candle now) or "now" (the path)."""
        s = self.market.series
        i = s.index_at(now)
        if i < 0:
            raise ApiError(400, -1013, "Market is closed.")
        o, _h, _l, c, _v, closed = s.candle_as_of(i, now)
        # Past the end of a candle (data gap or end of data) the last close is the price.
        base = c if closed or reference == "now" else o
        tick = self.market.rules.tick_size
        if side == "BUY":
            return (Decimal(str(base)) * (1 + self.slippage) / tick).to_integral_value(
                rounding=ROUND_CEILING
            ) * tick
        return floor_to(Decimal(str(base)) * (1 - self.slippage), tick)

    # -- placing -----------------------------------------------------------------------------
    def create(self, params: dict[str, str], now: int, test: bool = False) -> dict[str, Any]:
        m, rules = self.market, self.market.rules
        m.check_symbol(params)
        side = mandatory(params, "side")
        if side not in ("BUY", "SELL"):
            raise ApiError(
                400,
                -1100,
                "Illegal characters found in parameter 'side'; legal range is 'BUY, SELL'.",
            )
        otype = mandatory(params, "type")
        if otype not in ("MARKET", "LIMIT", "LIMIT_MAKER"):
            raise ApiError(400, -1116, "Invalid orderType.")
        client_id = (
            params.get("newClientOrderId")
            or ("sim" + secrets.token_urlsafe(16).replace("-", "x").replace("_", "y"))[:22]
        )
        if not _CLIENT_ID.match(client_id):
            raise ApiError(
                400,
                -1100,
                "Illegal characters found in parameter 'newClientOrderId'; legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
            )
        resp_type = params.get("newOrderRespType") or (
            "FULL" if otype in ("MARKET", "LIMIT") else "ACK"
        )
        if resp_type not in ("ACK", "RESULT", "FULL"):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'newOrderRespType'.")
        qty = decimal_param(params, "quantity")
        quote_qty = decimal_param(params, "quoteOrderQty")
        tif = "GTC"
        crosses = True
        if otype == "MARKET":
            if (qty is None) == (quote_qty is None):
                raise ApiError(
                    400,
                    -1102,
                    "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty or both were sent!",
                )
            price = ZERO
            fill_price = self._taker_price(side, now, self.market_price)
            if qty is None:
                assert quote_qty is not None
                qty = floor_to(quote_qty / fill_price, rules.step_size)
            if qty > rules.market_max_qty:
                raise _filter("MARKET_LOT_SIZE")
        else:
            qty = decimal_param(params, "quantity", required=True)
            price = decimal_param(params, "price", required=True)
            assert qty is not None and price is not None
            if otype == "LIMIT":
                tif = mandatory(params, "timeInForce")
                if tif not in ("GTC", "IOC", "FOK"):
                    raise ApiError(
                        400, -1100, "Illegal characters found in parameter 'timeInForce'."
                    )
            if (
                price < rules.min_price
                or price > rules.max_price
                or (price - rules.min_price) % rules.tick_size != 0
            ):
                raise _filter("PRICE_FILTER")
            # Limits meet the price as it is now: the candle's open may already be history.
            taker = self._taker_price(side, now, "now")
            crosses = price >= taker if side == "BUY" else price <= taker
            if otype == "LIMIT_MAKER" and crosses:
                raise ApiError(400, -2010, "Order would immediately match and take.")
            fill_price = (
                (min(price, taker) if side == "BUY" else max(price, taker)) if crosses else price
            )
        if (
            qty < rules.min_qty
            or qty > rules.max_qty
            or (qty - rules.min_qty) % rules.step_size != 0
        ):
            raise _filter("LOT_SIZE")
        notional = qty * (price or fill_price)
        if notional < rules.min_notional or (otype != "MARKET" and notional > rules.max_notional):
            raise _filter("NOTIONAL")
        if any(o.client_id == client_id and o.is_open for o in self.orders):
            raise ApiError(400, -2010, "Duplicate order sent.")
        if side == "BUY":
            lock_asset = m.quote
            lock_per_qty = (price or fill_price) * (
                (1 + self.fee) if self.commission == "quote" else 1
            )
        else:
            lock_asset, lock_per_qty = m.base, Decimal(1)
        if self.free.get(lock_asset, ZERO) < qty * lock_per_qty:
            raise _insufficient()
        if test:
            return {}
        order = Order(
            order_id=self.next_order_id,
            client_id=client_id,
            side=side,
            type=otype,
            time_in_force=tif,
            price=price,
            orig_qty=qty,
            orig_quote_qty=quote_qty or ZERO,
            time=now,
            update_time=now,
            parts=self.parts,
            fill_price=fill_price,
            lock_asset=lock_asset,
            lock_per_qty=lock_per_qty,
            watch_from=now,
            is_maker=not crosses,
        )
        self.next_order_id += 1
        self.orders.append(order)
        self._lock(order.lock_asset, qty * lock_per_qty)
        fills: list[Trade] = []
        if crosses:
            order.executable = True
            fills.append(self._fill_part(order, now, whole=tif in ("IOC", "FOK")))
        elif tif in ("IOC", "FOK"):
            self._close(order, "EXPIRED", now)
        log.info(
            "order placed",
            order_id=order.order_id,
            client_order_id=client_id,
            side=side,
            type=otype,
            qty=fmt(qty),
            status=order.status,
        )
        self.on_change()
        return order.placed_json(m.symbol_id, resp_type, fills)

    # -- executing ---------------------------------------------------------------------------
    def _lock(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.free.get(asset, ZERO) - amount
        self.locked[asset] = self.locked.get(asset, ZERO) + amount

    def _release(self, asset: str, amount: Decimal) -> None:
        self._lock(asset, -amount)

    def _fill_part(self, order: Order, now: int, whole: bool = False) -> Trade:
        m, step = self.market, self.market.rules.step_size
        if whole or order.parts_done >= order.parts - 1:
            qty = order.remaining
        else:
            qty = min(max(floor_to(order.orig_qty / order.parts, step), step), order.remaining)
        price = order.fill_price
        quote = (qty * price).quantize(EIGHT)
        self._release(order.lock_asset, qty * order.lock_per_qty)
        if order.side == "BUY":
            if self.commission == "binance":
                fee, fee_asset = (qty * self.fee).quantize(EIGHT, ROUND_HALF_UP), m.base
                self.free[m.base] += qty - fee
                self.free[m.quote] -= quote
            else:
                fee, fee_asset = (quote * self.fee).quantize(EIGHT, ROUND_HALF_UP), m.quote
                self.free[m.base] += qty
                self.free[m.quote] -= quote + fee
        else:
            fee, fee_asset = (quote * self.fee).quantize(EIGHT, ROUND_HALF_UP), m.quote
            self.free[m.base] -= qty
            self.free[m.quote] += quote - fee
        trade = Trade(
            self.next_trade_id,
            order.order_id,
            price,
            qty,
            quote,
            fee,
            fee_asset,
            now,
            order.side == "BUY",
            order.is_maker,
        )
        self.next_trade_id += 1
        self.trades.append(trade)
        order.executed_qty += qty
        order.cum_quote += quote
        order.parts_done += 1
        order.update_time = now
        order.status = "FILLED" if order.remaining <= 0 else "PARTIALLY_FILLED"
        log.info(
            "order fill",
            order_id=order.order_id,
            client_order_id=order.client_id,
            side=order.side,
            qty=fmt(qty),
            price=fmt(price),
            status=order.status,
        )
        return trade

    def _close(self, order: Order, status: str, now: int) -> None:
        self._release(order.lock_asset, order.remaining * order.lock_per_qty)
        order.status = status
        order.update_time = now

    def tick(self, now: int) -> None:
        """Advance executions: one more part of each executing order, resting limits vs the path."""
        changed = False
        for order in self.orders:
            if not order.is_open:
                continue
            if order.executable:
                self._fill_part(order, now)
                changed = True
                continue
            ext = self.market.series.extremes(order.watch_from, now)
            order.watch_from = max(order.watch_from, now)
            if ext is None:
                continue
            low, high = ext
            if (order.side == "BUY" and Decimal(str(low)) <= order.price) or (
                order.side == "SELL" and Decimal(str(high)) >= order.price
            ):
                order.executable = True
                self._fill_part(order, now)
                changed = True
        if changed:
            self.on_change()

    # -- queries and cancels -----------------------------------------------------------------
    def _find(self, params: dict[str, str], not_found: ApiError) -> Order:
        order_id = int_param(params, "orderId")
        client_id = params.get("origClientOrderId")
        if order_id is None and not client_id:
            raise ApiError(
                400,
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        # A client id may be reused once its order is closed; the newest order carrying it wins.
        for order in reversed(self.orders):
            if (order_id is None or order.order_id == order_id) and (
                not client_id or order.client_id == client_id
            ):
                return order
        raise not_found

    def get_order(self, params: dict[str, str], _now: int) -> dict[str, Any]:
        self.market.check_symbol(params)
        return self._find(params, ApiError(400, -2013, "Order does not exist.")).json(
            self.market.symbol_id
        )

    def cancel(self, params: dict[str, str], now: int) -> dict[str, Any]:
        self.market.check_symbol(params)
        order = self._find(params, ApiError(400, -2011, "Unknown order sent."))
        if not order.is_open:
            raise ApiError(400, -2011, "Unknown order sent.")
        return self._cancel(order, params.get("newClientOrderId"), now)

    def _cancel(self, order: Order, cancel_id: str | None, now: int) -> dict[str, Any]:
        self._close(order, "CANCELED", now)
        log.info("order canceled", order_id=order.order_id, client_order_id=order.client_id)
        self.on_change()
        view = order.json(self.market.symbol_id)
        keep = (
            "symbol",
            "orderId",
            "orderListId",
            "price",
            "origQty",
            "executedQty",
            "cummulativeQuoteQty",
            "status",
            "timeInForce",
            "type",
            "side",
            "selfTradePreventionMode",
        )
        return {
            "origClientOrderId": order.client_id,
            "clientOrderId": cancel_id or "sim-cancel-" + str(order.order_id),
            "transactTime": now,
            **{k: view[k] for k in keep},
        }

    def cancel_all(self, params: dict[str, str], now: int) -> list[dict[str, Any]]:
        self.market.check_symbol(params)
        open_orders = [o for o in self.orders if o.is_open]
        if not open_orders:
            raise ApiError(400, -2011, "Unknown order sent.")
        return [self._cancel(o, None, now) for o in open_orders]

    def open_orders(self, params: dict[str, str], _now: int) -> list[dict[str, Any]]:
        self.market.check_symbol(params, required=False)
        return [o.json(self.market.symbol_id) for o in self.orders if o.is_open]

    def all_orders(self, params: dict[str, str], _now: int) -> list[dict[str, Any]]:
        self.market.check_symbol(params)
        rows = self._window(self.orders, params, lambda o: o.order_id, lambda o: o.time, "orderId")
        return [o.json(self.market.symbol_id) for o in rows]

    def my_trades(self, params: dict[str, str], _now: int) -> list[dict[str, Any]]:
        self.market.check_symbol(params)
        trades = self.trades
        order_id = int_param(params, "orderId")
        if order_id is not None:
            trades = [t for t in trades if t.order_id == order_id]
        rows = self._window(trades, params, lambda t: t.trade_id, lambda t: t.time, "fromId")
        return [t.json(self.market.symbol_id) for t in rows]

    @staticmethod
    def _window(
        rows: list[Any],
        params: dict[str, str],
        key: Callable[[Any], int],
        when: Callable[[Any], int],
        id_param: str,
    ) -> list[Any]:
        """Binance paging: from an id, or within [startTime, endTime], else the latest ``limit``."""
        limit = limit_param(params, 500, 1000)
        from_id = int_param(params, id_param)
        start, end = int_param(params, "startTime"), int_param(params, "endTime")
        if from_id is not None:
            return [r for r in rows if key(r) >= from_id][:limit]
        if start is not None or end is not None:
            picked = [
                r
                for r in rows
                if (start is None or when(r) >= start) and (end is None or when(r) <= end)
            ]
            return picked[:limit] if start is not None else picked[-limit:]
        return rows[-limit:]

    def account(self, params: dict[str, str], now: int) -> dict[str, Any]:
        omit_zero = params.get("omitZeroBalances") == "true"
        balances = [
            {"asset": a, "free": fmt(self.free[a]), "locked": fmt(self.locked[a])}
            for a in sorted(self.free)
            if not (omit_zero and self.free[a] == 0 and self.locked[a] == 0)
        ]
        rate = fmt(self.fee)
        bps = int(self.fee * 10_000)
        return {
            "makerCommission": bps,
            "takerCommission": bps,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": rate,
                "taker": rate,
                "buyer": "0.00000000",
                "seller": "0.00000000",
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": now,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 1000001,
        }
