"""How big a live order is: the bot's own coins only, the market's precision and minimums, and
the buy's room for fees and slippage. A mixin of :class:`chartrl.account.live.LiveAccount`
(needs ``exchange``, ``market``, ``symbol``, ``base``, ``quote``, ``free``, ``own``, ``fee_rate``,
``settings``, ``log``, ``equity`` and ``_call``)."""

from __future__ import annotations

from typing import Any

from chartrl.account import ccxt_errors
from chartrl.actions import Action


class Sizing:
    """Order sizing; see the module docstring."""

    def _amount(self, amount: float) -> float:
        try:
            return float(self.exchange.amount_to_precision(self.symbol, amount))
        except Exception as exc:  # noqa: BLE001 - ccxt raises InvalidOrder when it rounds to 0
            if "precision" in str(exc):
                return 0.0
            raise ccxt_errors.translate(exc, f"round amount {amount} for {self.symbol}") from exc

    def _tradable_position(self, price: float) -> float:
        """Base held, or 0 when it is dust below the market's minimums (fees paid in the base leave some):
        dust can be neither sold nor counted as a position, so the policy must see the account as flat."""
        limits = self.market.get("limits") or {}
        min_amount = float((limits.get("amount") or {}).get("min") or 0.0)
        min_cost = float((limits.get("cost") or {}).get("min") or 0.0)
        held = self._amount(self.own.get(self.base, 0.0))
        return held if held > 0 and held >= min_amount and held * price >= min_cost else 0.0

    def _size(
        self, action: int, price: float, max_notional: float | None
    ) -> tuple[str, float, float | None] | None:
        """(side, amount, quote cost of a buy by cost) to send, or None when the action trades
        nothing; reasons are logged."""
        limits = self.market.get("limits") or {}
        min_amount = float((limits.get("amount") or {}).get("min") or 0.0)
        min_cost = float((limits.get("cost") or {}).get("min") or 0.0)
        # Only the bot's own coins: its budget's quote, the base its own fills bought.
        free_quote = min(self.free.get(self.quote, 0.0), self.own.get(self.quote, 0.0))
        free_base = min(self.free.get(self.base, 0.0), self.own.get(self.base, 0.0))
        if action == Action.BUY:
            held = self._tradable_position(price)
            if held > 0:
                return self._skip("already_long", position=held)
            budget = min(free_quote, self.equity(price) * self.settings.trading.position_fraction)
            if max_notional is not None:
                budget = min(budget, max_notional)
            if self.exchange.has.get("createMarketBuyOrderWithCost"):
                # Buy by quote amount (Binance quoteOrderQty): slippage changes what we get, never
                # what we spend. The fee's room covers an exchange that charges it in the quote.
                cost = float(
                    self.exchange.cost_to_precision(self.symbol, budget / (1 + self.fee_rate))
                )
                amount = self._amount(cost / price)  # what the ledger records: an estimate
                if amount * price < min_cost:
                    return self._skip("below_min_notional", notional=cost, min_notional=min_cost)
                return ("buy", amount, cost) if cost > 0 else self._skip("no_quote_budget")
            # Sized from the ticker now, not the candle's open, with room for the move meanwhile.
            price = self._ask(price)
            margin = (1 + self.fee_rate) * (
                1
                + (self.settings.trading.slippage_bps + self.settings.trading.buy_margin_bps) / 1e4
            )
            amount = self._amount(budget / (price * margin))
            if amount * price * margin > free_quote + 1e-9:
                return self._skip(
                    "insufficient_free_balance", need=amount * price * margin, free=free_quote
                )
            side = "buy"
        elif action == Action.SELL:
            amount, side = self._amount(free_base), "sell"
            if amount <= 0:
                return self._skip("flat")
        else:
            return None
        if amount <= 0 or amount < min_amount:
            return self._skip("below_min_amount", amount=amount, min_amount=min_amount)
        if amount * price < min_cost:
            return self._skip("below_min_notional", notional=amount * price, min_notional=min_cost)
        return side, amount, None

    def _ask(self, fallback: float) -> float:
        ticker = self._call("fetch ticker", self.exchange.fetch_ticker, self.symbol)
        return float(ticker.get("ask") or ticker.get("last") or fallback)

    def _skip(self, reason: str, **kw: Any) -> None:
        self.log.info("order_skipped", reason=reason, **kw)
        return None
