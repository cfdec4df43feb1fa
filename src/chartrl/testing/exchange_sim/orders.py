"""Orders and trades as records, their Binance JSON views, and their JSON state form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import Any

from chartrl.testing.exchange_sim.protocol import fmt

OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
ZERO = Decimal(0)


@dataclass
class Order:
    order_id: int
    client_id: str
    side: str
    """BUY or SELL."""
    type: str
    """MARKET, LIMIT or LIMIT_MAKER."""
    time_in_force: str
    price: Decimal
    """Limit price (0 for MARKET, as Binance reports it)."""
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time: int
    parts: int
    """How many fills the order is executed in (the partial-fill test device)."""
    fill_price: Decimal = ZERO
    """Price the next part fills at, fixed once the order became executable."""
    lock_asset: str = ""
    lock_per_qty: Decimal = ZERO
    """Funds held per unit of the remaining quantity (quote per base for buys, 1 for sells)."""
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    status: str = "NEW"
    update_time: int = 0
    parts_done: int = 0
    is_maker: bool = False
    """Rested in the book before filling (maker) rather than crossing on arrival (taker)."""
    executable: bool = False
    """True once the price reached the order: remaining parts fill one per later request."""
    watch_from: int = 0
    """Resting limit orders: the price path was checked up to this time."""

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    def to_state(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Order:
        kinds = {f.name: f.type for f in fields(cls)}
        return cls(
            **{
                k: (Decimal(v) if kinds[k] == "Decimal" else v)
                for k, v in data.items()
                if k in kinds
            }
        )

    def json(self, symbol_id: str) -> dict[str, Any]:
        """The order as GET /api/v3/order answers it."""
        return {
            "symbol": symbol_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_id,
            "price": fmt(self.price),
            "origQty": fmt(self.orig_qty),
            "executedQty": fmt(self.executed_qty),
            "cummulativeQuoteQty": fmt(self.cum_quote),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": self.time,
            "updateTime": self.update_time or self.time,
            "isWorking": True,
            "workingTime": self.time,
            "origQuoteOrderQty": fmt(self.orig_quote_qty),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def placed_json(self, symbol_id: str, resp_type: str, fills: list[Trade]) -> dict[str, Any]:
        """The order as POST /api/v3/order answers it (ACK, RESULT or FULL)."""
        ack = {
            "symbol": symbol_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_id,
            "transactTime": self.time,
        }
        if resp_type == "ACK":
            return ack
        full = self.json(symbol_id)
        result = {
            **ack,
            **{
                k: full[k]
                for k in (
                    "price",
                    "origQty",
                    "executedQty",
                    "origQuoteOrderQty",
                    "cummulativeQuoteQty",
                    "status",
                    "timeInForce",
                    "type",
                    "side",
                    "workingTime",
                    "selfTradePreventionMode",
                )
            },
        }
        if resp_type == "FULL":
            result["fills"] = [t.fill_json() for t in fills]
        return result


@dataclass
class Trade:
    trade_id: int
    order_id: int
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool

    def to_state(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Trade:
        kinds = {f.name: f.type for f in fields(cls)}
        return cls(
            **{
                k: (Decimal(v) if kinds[k] == "Decimal" else v)
                for k, v in data.items()
                if k in kinds
            }
        )

    def fill_json(self) -> dict[str, Any]:
        return {
            "price": fmt(self.price),
            "qty": fmt(self.qty),
            "commission": fmt(self.commission),
            "commissionAsset": self.commission_asset,
            "tradeId": self.trade_id,
        }

    def json(self, symbol_id: str) -> dict[str, Any]:
        """The trade as GET /api/v3/myTrades answers it."""
        return {
            "symbol": symbol_id,
            "id": self.trade_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "price": fmt(self.price),
            "qty": fmt(self.qty),
            "quoteQty": fmt(self.quote_qty),
            "commission": fmt(self.commission),
            "commissionAsset": self.commission_asset,
            "time": self.time,
            "isBuyer": self.is_buyer,
            "isMaker": self.is_maker,
            "isBestMatch": True,
        }
