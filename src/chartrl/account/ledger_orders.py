"""The ledger's trading record: decisions, orders and their fills.

A decision is recorded before its order, and an order's client id before it is sent (invariant 4);
a fill is recorded once per exchange trade id. A mixin of :class:`chartrl.account.ledger.Ledger`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chartrl.account.ledger_conn import LedgerConnection, as_row, now_ms
from chartrl.account.migrations import FINAL_STATES, ORDER_STATES
from chartrl.errors import ChartrlError


@dataclass(frozen=True)
class OrderRow:
    client_order_id: str
    exchange_order_id: str | None
    symbol: str
    mode: str
    side: str
    type: str
    amount: float
    filled: float
    average: float | None
    cost: float
    state: str
    decision_id: int | None
    error: str | None
    created_ms: int
    sent_ms: int | None
    updated_ms: int
    closed_ms: int | None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class FillRow:
    trade_id: str
    client_order_id: str
    symbol: str
    mode: str
    side: str
    price: float
    amount: float
    cost: float
    fee: float
    fee_currency: str | None
    timestamp_ms: int
    recorded_ms: int


class LedgerOrders(LedgerConnection):
    """Decisions, orders and fills; see the module docstring."""

    # -- decisions ---------------------------------------------------------------------------
    def record_decision(
        self,
        *,
        symbol: str,
        mode: str,
        candle_ms: int,
        action: int,
        final_action: int,
        reason: str,
        model_version: str | None = None,
        price: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO decisions (created_ms, symbol, mode, candle_ms, action, final_action, reason, model_version, price, details)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    now_ms(),
                    symbol,
                    mode,
                    candle_ms,
                    int(action),
                    int(final_action),
                    reason,
                    model_version,
                    price,
                    json.dumps(details) if details else None,
                ),
            )
            return int(cur.lastrowid)

    def decisions(self, symbol: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql = (
            "SELECT * FROM decisions"
            + (" WHERE symbol = ?" if symbol else "")
            + " ORDER BY id DESC LIMIT ?"
        )
        return [dict(r) for r in self._query(sql, ((symbol,) if symbol else ()) + (limit,))]

    # -- orders and fills ----------------------------------------------------------------------
    def create_order(
        self,
        client_order_id: str,
        *,
        symbol: str,
        mode: str,
        side: str,
        amount: float,
        decision_id: int | None = None,
        state: str = "pending",
        type: str = "market",
        created_ms: int | None = None,
    ) -> OrderRow:
        t = now_ms() if created_ms is None else int(created_ms)
        with self.transaction() as c:
            c.execute(
                "INSERT INTO orders (client_order_id, symbol, mode, side, type, amount, state, decision_id, created_ms, updated_ms)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    client_order_id,
                    symbol,
                    mode,
                    side,
                    type,
                    float(amount),
                    state,
                    decision_id,
                    t,
                    t,
                ),
            )
        return self.order(client_order_id)  # type: ignore[return-value]

    _ORDER_FIELDS = frozenset(
        {
            "exchange_order_id",
            "filled",
            "average",
            "cost",
            "state",
            "error",
            "sent_ms",
            "closed_ms",
            "amount",
        }
    )

    def update_order(self, client_order_id: str, **fields: Any) -> None:
        """Set order fields; a final state also stamps ``closed_ms``."""
        bad = set(fields) - self._ORDER_FIELDS
        if bad:
            raise ValueError(f"unknown order fields {sorted(bad)}")
        if "state" in fields and fields["state"] not in ORDER_STATES:
            raise ValueError(f"unknown order state {fields['state']!r}; one of {ORDER_STATES}")
        t = now_ms()
        fields["updated_ms"] = t
        if fields.get("state") in FINAL_STATES:
            fields.setdefault("closed_ms", t)
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as c:
            cur = c.execute(
                f"UPDATE orders SET {cols} WHERE client_order_id = ?",
                (*fields.values(), client_order_id),
            )
            if cur.rowcount != 1:
                raise ChartrlError(f"ledger has no order {client_order_id!r}")

    def order(self, client_order_id: str) -> OrderRow | None:
        rows = self._query("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,))
        return as_row(OrderRow, rows[0]) if rows else None

    def orders(
        self,
        mode: str | None = None,
        symbol: str | None = None,
        states: Sequence[str] | None = None,
    ) -> list[OrderRow]:
        where, params = self._filters(mode=mode, symbol=symbol)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(states)
        sql = (
            "SELECT * FROM orders"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created_ms, rowid"
        )
        return [as_row(OrderRow, r) for r in self._query(sql, params)]

    def unfinished_orders(self, mode: str, symbol: str | None = None) -> list[OrderRow]:
        """Orders whose outcome is not final yet: they must be reconciled before anything new is sent."""
        return self.orders(mode, symbol, [s for s in ORDER_STATES if s not in FINAL_STATES])

    def count_orders_since(self, since_ms: int, mode: str, symbol: str) -> int:
        """Orders created since ``since_ms`` that may have reached the market (rejected ones excluded)."""
        return int(
            self._query(
                "SELECT count(*) FROM orders WHERE mode = ? AND symbol = ? AND created_ms >= ? AND state != 'rejected'",
                (mode, symbol, since_ms),
            )[0][0]
        )

    def add_fill(
        self,
        *,
        trade_id: str,
        client_order_id: str,
        symbol: str,
        mode: str,
        side: str,
        price: float,
        amount: float,
        cost: float | None = None,
        fee: float = 0.0,
        fee_currency: str | None = None,
        timestamp_ms: int,
    ) -> bool:
        """Record a fill once: True when new, False when this trade id was already recorded."""
        with self.transaction() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO fills (trade_id, client_order_id, symbol, mode, side, price, amount, cost, fee,"
                " fee_currency, timestamp_ms, recorded_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    str(trade_id),
                    client_order_id,
                    symbol,
                    mode,
                    side,
                    float(price),
                    float(amount),
                    float(cost if cost is not None else price * amount),
                    float(fee or 0.0),
                    fee_currency,
                    int(timestamp_ms),
                    now_ms(),
                ),
            )
            return cur.rowcount == 1

    def fills(
        self, mode: str | None = None, symbol: str | None = None, client_order_id: str | None = None
    ) -> list[FillRow]:
        where, params = self._filters(mode=mode, symbol=symbol, client_order_id=client_order_id)
        sql = (
            "SELECT * FROM fills"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY timestamp_ms, rowid"
        )
        return [as_row(FillRow, r) for r in self._query(sql, params)]

    def last_fill_rowid(self) -> int:
        return int(self._query("SELECT coalesce(max(rowid), 0) FROM fills")[0][0])

    def fills_after_rowid(self, mode: str, symbol: str, rowid: int) -> list[FillRow]:
        """Fills recorded after the row ``rowid`` (the ones a balance baseline does not include yet)."""
        rows = self._query(
            "SELECT * FROM fills WHERE mode = ? AND symbol = ? AND rowid > ? ORDER BY rowid",
            (mode, symbol, rowid),
        )
        return [as_row(FillRow, r) for r in rows]
