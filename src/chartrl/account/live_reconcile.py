"""Reconciliation of the live account's orders with the exchange (invariant 4 of ARCHITECTURE.md).

Every unfinished order in the ledger is looked up by its client id; what the exchange says (state,
filled amount, trades) is recorded in one transaction. A mixin of :class:`LiveAccount`, kept apart
so the order protocol and the reconciliation each read in one sitting.
"""

from __future__ import annotations

import time
from typing import Any

from chartrl.account import ccxt_errors
from chartrl.account.ledger_conn import now_ms
from chartrl.account.ledger_orders import OrderRow

MODE = "live"
CLIENT_ID_PREFIX = "crl-"
_CCXT_STATE = {
    "closed": "filled",
    "canceled": "canceled",
    "expired": "canceled",
    "rejected": "rejected",
}


class Reconciler:
    """Needs ``ledger``, ``exchange``, ``symbol``, ``grace_ms``, ``sleep``, ``log``, ``_call`` and ``_halt``."""

    # -- reconciliation -----------------------------------------------------------------------------
    def reconcile(self, wait: bool = False) -> list[OrderRow]:
        """Resolve every unfinished order with the exchange; the ones still unresolved.

        ``wait`` sleeps out the lookup grace of a not-found order instead of leaving it unknown.
        """
        left = []
        for order in self.ledger.unfinished_orders(MODE, self.symbol):
            if (
                order.state == "unknown"
                and time.monotonic() < self._lookups.get(order.client_order_id, (0.0, 0.0))[0]
            ):
                left.append(order)  # lost: its next look-up is not due yet (backoff)
                continue
            resolved = self._resolve(order)
            while not resolved.final and wait and resolved.state in ("pending", "unknown"):
                remaining = resolved.created_ms + self.grace_ms - now_ms()
                if remaining <= 0:
                    break  # lost: looked up again with backoff, never waited out here
                self.sleep(max(0.05, min(remaining / 1000, 2.0)))
                resolved = self._resolve(resolved)
            if resolved.state in ("open", "partially_filled"):
                resolved = self._settle(resolved)
                if not resolved.final and now_ms() - resolved.created_ms >= self.cancel_after_ms:
                    resolved = self._cancel(resolved)
            if not resolved.final:
                left.append(resolved)
        return left

    def _resolve(self, order: OrderRow) -> OrderRow:
        cid = order.client_order_id
        try:
            remote = self.exchange.fetch_order(
                order.exchange_order_id, self.symbol, {"clientOrderId": cid}
            )
        except Exception as exc:  # noqa: BLE001 - mapped below
            if not ccxt_errors.is_not_found(exc):
                raise ccxt_errors.translate(exc, f"look up order {cid}") from exc
            if order.state in ("sent", "open", "partially_filled"):
                # We saw it live before; vanishing is not something we can explain: stop.
                self._halt(
                    "order_vanished",
                    f"order {cid} was {order.state} and the exchange no longer knows it",
                )
            age = now_ms() - order.created_ms
            if age >= max(self.grace_ms, self.lost_deadline_ms):
                self.ledger.update_order(
                    cid, state="rejected", error="not on the exchange: the request never arrived"
                )
                self._lookups.pop(cid, None)
                self.log.warning("order_never_arrived", client_order_id=cid, age_s=age / 1000)
                return self.ledger.order(cid)  # type: ignore[return-value]
            if order.state == "pending":
                self.ledger.update_order(cid, state="unknown")
            if age >= self.grace_ms:
                # Lost, not gone: a delayed request can still land (hummingbot's lost orders).
                delay = min(max(1.0, 2 * self._lookups.get(cid, (0.0, 0.5))[1]), 300.0)
                self._lookups[cid] = (time.monotonic() + delay, delay)
                self.log.warning(
                    "order_lost",
                    client_order_id=cid,
                    age_s=round(age / 1000, 1),
                    next_lookup_s=delay,
                    gives_up_in_s=round((self.lost_deadline_ms - age) / 1000),
                )
            return self.ledger.order(cid)  # type: ignore[return-value]
        self._lookups.pop(cid, None)
        return self._apply(order, remote)

    def _cancel(self, order: OrderRow) -> OrderRow:
        """Cancel the unfilled remainder of an order stuck open; what it filled stays recorded.
        A cancel that fails halts: an order we cannot end would block trading forever."""
        cid = order.client_order_id
        try:
            self.exchange.cancel_order(order.exchange_order_id, self.symbol, {"clientOrderId": cid})
        except Exception as exc:  # noqa: BLE001 - mapped below
            if not ccxt_errors.is_not_found(exc):  # not found: it ended meanwhile; look it up
                err = ccxt_errors.translate(exc, f"cancel order {cid}")
                self._halt(
                    "cancel_failed",
                    f"order {cid} is {order.state} ({order.filled:g} filled) and could not be "
                    f"cancelled: {err}; cancel it on the exchange",
                )
        resolved = self._resolve(order)
        if not resolved.final:
            self._halt(
                "cancel_failed",
                f"order {cid} is still {resolved.state} after its cancel; cancel it on the exchange",
            )
        age = (now_ms() - order.created_ms) / 1000
        self.ledger.update_order(
            cid,
            error=f"remainder canceled by chartrl after {age:.0f} s ({resolved.filled:g} filled)",
        )
        self.log.warning("order_canceled", client_order_id=cid, filled=resolved.filled, after_s=age)
        return self.ledger.order(cid)  # type: ignore[return-value]

    def recover_orders(self, limit: int = 50) -> int:
        """Look up the recent orders the ledger holds as rejected or unresolved, and record what
        the exchange did with them. Run before a re-baseline (``chartrl halt clear`` of a balance
        mismatch), so a fill we gave up on enters the ledger instead of the new baseline."""
        found = 0
        candidates = self.ledger.orders(
            MODE, self.symbol, states=("rejected", "unknown", "pending")
        )
        for order in candidates[-limit:]:
            try:
                remote = self.exchange.fetch_order(
                    None, self.symbol, {"clientOrderId": order.client_order_id}
                )
            except Exception as exc:  # noqa: BLE001 - not found is the usual answer
                if ccxt_errors.is_not_found(exc):
                    continue
                raise ccxt_errors.translate(exc, f"look up order {order.client_order_id}") from exc
            self.log.warning(
                "order_recovered", client_order_id=order.client_order_id, was=order.state
            )
            self._apply(order, remote)
            found += 1
        return found

    def check_open_orders(self) -> None:
        """An open order with our client id prefix that the ledger does not know means a lost ledger: halt."""
        remote = self._call("fetch open orders", self.exchange.fetch_open_orders, self.symbol)
        strangers = [
            o.get("clientOrderId")
            for o in remote
            if str(o.get("clientOrderId") or "").startswith(CLIENT_ID_PREFIX)
            and self.ledger.order(str(o["clientOrderId"])) is None
        ]
        if strangers:
            self._halt(
                "unknown_order",
                f"open orders {', '.join(map(str, strangers))} were sent by chartrl but are "
                "not in this ledger (restored from a backup? another instance?)",
            )

    def _apply(self, order: OrderRow, remote: dict[str, Any]) -> OrderRow:
        """Record what the exchange says of ``order`` (state, amounts, fills) in one transaction."""
        cid = order.client_order_id
        filled = float(remote.get("filled") or 0.0)
        status = remote.get("status")
        if status is None:  # an ACK-only answer: accepted, nothing known yet
            state = "partially_filled" if filled > 0 else "sent"
        else:
            state = _CCXT_STATE.get(status, "partially_filled" if filled > 0 else "open")
        trades = remote.get("trades") or []
        if filled > 0 and (
            not trades
            or any(t.get("id") is None for t in trades)
            or abs(sum(float(t["amount"]) for t in trades) - filled) > 1e-12
        ):
            trades = self._call(
                f"fetch trades of order {cid}",
                self.exchange.fetch_order_trades,
                str(remote["id"]),
                self.symbol,
            )
        known = {f.trade_id: f.amount for f in self.ledger.fills(client_order_id=cid)}
        known.update({str(t["id"]): float(t["amount"]) for t in trades})
        if state in ("filled", "canceled") and sum(known.values()) < filled - 1e-9 * max(
            1.0, filled
        ):
            # The trade list lags the order: keep it open in the ledger so the next look-up completes it.
            self.log.warning(
                "fills_lagging", client_order_id=cid, filled=filled, recorded=sum(known.values())
            )
            state = "partially_filled"
        with self.ledger.transaction():
            self.ledger.update_order(
                cid,
                state=state,
                exchange_order_id=str(remote.get("id")),
                filled=filled,
                average=remote.get("average"),
                cost=float(remote.get("cost") or 0.0),
                sent_ms=order.sent_ms or now_ms(),
            )
            for t in trades:
                fee = t.get("fee") or {}
                self.ledger.add_fill(
                    trade_id=str(t["id"]),
                    client_order_id=cid,
                    symbol=self.symbol,
                    mode=MODE,
                    side=t.get("side") or order.side,
                    price=float(t["price"]),
                    amount=float(t["amount"]),
                    cost=float(t.get("cost") or t["price"] * t["amount"]),
                    fee=float(fee.get("cost") or 0.0),
                    fee_currency=fee.get("currency"),
                    timestamp_ms=int(t.get("timestamp") or now_ms()),
                )
        self.log.info(
            "order_update", client_order_id=cid, state=state, filled=filled, trades=len(trades)
        )
        return self.ledger.order(cid)  # type: ignore[return-value]

    def _settle(self, order: OrderRow, attempts: int = 10) -> OrderRow:
        """Follow a partially filled market order until final (left for reconcile() if it is not)."""
        for i in range(attempts):
            if order.final:
                break
            self.sleep(min(0.05 * 2**i, 1.0))
            order = self._resolve(order)
        return order
