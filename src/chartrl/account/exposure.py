"""What every symbol's own book holds, read from its fills: the positions a total limit adds up.

A position is what that symbol's own fills bought minus what they sold (invariant 8: the bot
trades only its own position, and a symbol's book never mixes in another's fills). It is valued
at the symbol's newest decision price (the close its last tick saw), else its last fill price.
"""

from __future__ import annotations

from dataclasses import dataclass

from chartrl.account.ledger import Ledger
from chartrl.account.live_books import expected_balances
from chartrl.symbols import base_quote


@dataclass(frozen=True)
class Holding:
    symbol: str
    quote: str
    amount: float
    """Base currency the symbol's own fills hold."""
    price: float | None
    """Newest known price in the quote currency (None: no decision and no fill)."""

    @property
    def value(self) -> float:
        return self.amount * (self.price or 0.0)


def holdings(ledger: Ledger, mode: str) -> dict[str, Holding]:
    """Every symbol with fills in ``mode``: its own position, from its own fills only."""
    by_symbol: dict[str, list] = {}
    for f in ledger.fills(mode):
        by_symbol.setdefault(f.symbol, []).append(f)
    out = {}
    for symbol, fills in by_symbol.items():
        base, quote = base_quote(symbol)
        amount = expected_balances({}, fills, base, quote)[base]
        rows = ledger._query(
            "SELECT price FROM decisions WHERE symbol = ? AND mode = ? AND price IS NOT NULL "
            "ORDER BY id DESC LIMIT 1",
            (symbol, mode),
        )
        price = float(rows[0][0]) if rows else fills[-1].price
        out[symbol] = Holding(symbol, quote, amount, price)
    return out


def quote_exposure(ledger: Ledger, mode: str, quote: str, exclude: str) -> float:
    """Value of the positions of the symbols quoted in ``quote``, ``exclude`` left out (the caller
    marks its own at the price it has just seen)."""
    return sum(
        max(h.value, 0.0)
        for h in holdings(ledger, mode).values()
        if h.quote == quote and h.symbol != exclude
    )
