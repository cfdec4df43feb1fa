"""Paper account: the backtest fill model (:class:`SimAccount`) fed live candles, its book kept in the ledger.

Each fill is written to the ledger in one transaction together with the book it produced (an order
row in state ``filled``, a fill row, the book's cash/position/entry), so a killed paper daemon
restarts with exactly the cash, position and history it had. The newest executed candle is part of
that state: executing the same candle again after a restart does nothing, which makes a replayed
tick harmless.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from chartrl.account.base import Candle, SimAccount
from chartrl.account.fills import Book, Fill, MarketRules
from chartrl.account.ledger import Ledger
from chartrl.logs import get_logger
from chartrl.symbols import base_quote

MODE = "paper"


class PaperAccount(SimAccount):
    """A :class:`SimAccount` whose :class:`Book` lives in the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        symbol: str,
        initial_cash: float,
        rules: MarketRules | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.ledger = ledger
        self.symbol = symbol
        self.quote = base_quote(symbol)[1]
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.log = get_logger("chartrl.paper", symbol=symbol)
        state = ledger.load_paper_book(symbol)
        if state is None:
            super().__init__(initial_cash, rules)
            self.last_candle_ms: int | None = None
            self.log.info("paper_account_new", cash=initial_cash)
        else:
            super().__init__(state["initial_cash"], rules, book=self._load_book(state))
            self.last_price = state["last_price"]
            self.last_candle_ms = state["last_candle_ms"]
            self.log.info(
                "paper_account_resumed",
                cash=self.book.cash,
                position=self.book.position,
                fills=len(self.book.fills),
                last_candle_ms=self.last_candle_ms,
            )

    def _load_book(self, state: dict) -> Book:
        fills = [
            Fill(f.timestamp_ms, f.side, f.price, f.amount, f.fee)
            for f in self.ledger.fills(MODE, self.symbol)
        ]
        return Book(
            cash=state["cash"],
            position=state["position"],
            entry_price=state["entry_price"],
            fees_paid=state["fees_paid"],
            turnover=state["turnover"],
            fills=fills,
        )

    def _state(self) -> dict:
        b = self.book
        return {
            "cash": b.cash,
            "position": b.position,
            "entry_price": b.entry_price,
            "fees_paid": b.fees_paid,
            "turnover": b.turnover,
            "initial_cash": self.initial_cash,
            "last_price": self.last_price,
            "last_candle_ms": self.last_candle_ms,
        }

    def mark(self, price: float) -> None:
        """Mark to ``price`` without trading (persisted with the next execute)."""
        self.last_price = price

    def execute(
        self,
        action: int,
        candle: Candle,
        *,
        max_notional: float | None = None,
        decision_id: int | None = None,
    ) -> Fill | None:
        """Fill ``action`` at ``candle``'s open (the shared fill model) and persist the result atomically.

        ``max_notional`` caps what a buy spends (risk's max position value). A candle at or before
        the newest one already executed is skipped: that tick was done before a restart.
        """
        if self.last_candle_ms is not None and candle.timestamp <= self.last_candle_ms:
            self.log.info(
                "paper_candle_already_executed",
                candle_ms=candle.timestamp,
                last_candle_ms=self.last_candle_ms,
            )
            return None
        saved_rules, saved = (
            self.rules,
            (
                dataclasses.replace(self.book, fills=list(self.book.fills)),
                self.last_price,
                self.last_candle_ms,
            ),
        )
        if max_notional is not None:
            equity = self.book.equity(candle.open)
            if equity > 0:
                fraction = min(self.rules.position_fraction, max(max_notional, 0.0) / equity)
                self.rules = dataclasses.replace(self.rules, position_fraction=fraction)
        try:
            fill = super().execute(action, candle)
            self.last_candle_ms = candle.timestamp
            with self.ledger.transaction():
                if fill is not None:
                    self._record_fill(fill, candle, decision_id)
                self.ledger.save_paper_book(self.symbol, self._state())
        except BaseException:
            # The ledger refused (disk full, locked): keep memory equal to what is stored.
            self.book, self.last_price, self.last_candle_ms = saved
            raise
        finally:
            self.rules = saved_rules
        if fill is not None:
            self.log.info(
                "paper_fill",
                side=fill.side,
                price=fill.price,
                amount=fill.amount,
                fee=fill.fee,
                cash=self.book.cash,
                position=self.book.position,
            )
        return fill

    def _record_fill(self, fill: Fill, candle: Candle, decision_id: int | None) -> None:
        # Deterministic ids: one paper order per candle and side, so a replay cannot double it.
        cid = f"paper-{self.symbol}-{candle.timestamp}-{fill.side}"
        self.ledger.create_order(
            cid,
            symbol=self.symbol,
            mode=MODE,
            side=fill.side,
            amount=fill.amount,
            decision_id=decision_id,
            state="pending",
            created_ms=self.clock(),
        )
        self.ledger.update_order(
            cid,
            state="filled",
            filled=fill.amount,
            average=fill.price,
            cost=fill.notional,
            sent_ms=self.clock(),
        )
        self.ledger.add_fill(
            trade_id=f"{cid}-1",
            client_order_id=cid,
            symbol=self.symbol,
            mode=MODE,
            side=fill.side,
            price=fill.price,
            amount=fill.amount,
            cost=fill.notional,
            fee=fill.fee,
            fee_currency=self.quote,
            timestamp_ms=fill.timestamp,
        )
