"""What the ledger says a live account should hold, and the average entry cost of its position.

Expected balances are the baseline snapshot (taken on first start and after ``chartrl halt clear``
of a mismatch) plus every fill recorded since. Buys add the base amount and spend the cost; sells
the reverse; each fee is taken from the currency the exchange charged it in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from chartrl.account.ledger_orders import FillRow

_DUST = 1e-8  # exchanges print amounts with 8 decimals


@dataclass(frozen=True)
class BalanceCheck:
    expected: dict[str, float]
    actual: dict[str, float]
    tolerance: dict[str, float]
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatched

    def describe(self) -> str:
        if self.ok:
            return "balances match"
        return (
            "; ".join(
                f"{c}: ledger {self.expected[c]:.8f}, exchange {self.actual[c]:.8f} (tolerance {self.tolerance[c]:.8f})"
                for c in self.mismatched
            )
            + " — a deposit, withdrawal or trade chartrl did not make?"
        )


def expected_balances(
    baseline: Mapping[str, float], fills: Iterable[FillRow], base: str, quote: str
) -> dict[str, float]:
    out = {base: float(baseline.get(base, 0.0)), quote: float(baseline.get(quote, 0.0))}
    for f in fills:
        sign = 1.0 if f.side == "buy" else -1.0
        out[base] += sign * f.amount
        out[quote] -= sign * f.cost
        if f.fee_currency in out:
            out[f.fee_currency] -= f.fee
    return out


def compare_balances(
    baseline: Mapping[str, float],
    fills: list[FillRow],
    exchange_total: Mapping[str, float],
    base: str,
    quote: str,
    fee_rate: float,
) -> BalanceCheck:
    """Expected vs actual base and quote totals; the tolerance is one fee of the largest fill plus dust."""
    expected = expected_balances(baseline, fills, base, quote)
    actual = {c: float(exchange_total.get(c, 0.0)) for c in (base, quote)}
    dust = _DUST * (len(fills) + 1)
    tolerance = {
        base: dust + fee_rate * max((f.amount for f in fills), default=0.0),
        quote: dust + fee_rate * max((f.cost for f in fills), default=0.0),
    }
    mismatched = [c for c in (base, quote) if abs(actual[c] - expected[c]) > tolerance[c]]
    return BalanceCheck(expected, actual, tolerance, mismatched)


def entry_price(fills: Iterable[FillRow], base: str, quote: str) -> float:
    """Average cost (fees included, quote per base) of the position built since it was last flat."""
    position = cost = 0.0
    for f in fills:
        if f.side == "buy":
            # A fee in the base shrinks what we hold; a fee in the quote adds to what we paid.
            position += f.amount - (f.fee if f.fee_currency == base else 0.0)
            cost += f.cost + (f.fee if f.fee_currency == quote else 0.0)
        else:
            if position > 0:
                cost *= max(position - f.amount, 0.0) / position
            position = max(position - f.amount, 0.0)
        if position <= _DUST:
            position = cost = 0.0
    return cost / position if position > 0 else 0.0
