"""The ledger's halts and risk days: what stops trading, for one symbol or for every one.

A halt of one symbol stops only it; a halt without a symbol stops them all. A risk day is a
symbol's equity at the first check of a UTC day and whether its daily loss limit killed it. A mixin
of :class:`chartrl.account.ledger.Ledger`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chartrl.account.ledger_conn import LedgerConnection, as_row, now_ms


@dataclass(frozen=True)
class HaltRow:
    id: int
    created_ms: int
    reason: str
    source: str
    details: str | None
    cleared_ms: int | None
    cleared_by: str | None
    symbol: str | None = None
    """The one symbol halted; None halts every symbol."""


class LedgerHalts(LedgerConnection):
    """Halts and risk days; see the module docstring."""

    # -- halts ------------------------------------------------------------------------------------
    def set_halt(
        self, reason: str, source: str, details: str | None = None, symbol: str | None = None
    ) -> int:
        """Record a halt of ``symbol`` (None: of every symbol); its id."""
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO halts (created_ms, reason, source, details, symbol) VALUES (?,?,?,?,?)",
                (now_ms(), reason, source, details, symbol),
            )
            return int(cur.lastrowid)

    def active_halts(self, symbol: str | None = None) -> list[HaltRow]:
        """Halts in force; with ``symbol``, those that stop it (its own and the all-symbol ones)."""
        sql = "SELECT * FROM halts WHERE cleared_ms IS NULL"
        params: tuple[Any, ...] = ()
        if symbol is not None:
            sql, params = sql + " AND (symbol IS NULL OR symbol = ?)", (symbol,)
        return [as_row(HaltRow, r) for r in self._query(sql + " ORDER BY id", params)]

    def halts(self, limit: int = 20) -> list[HaltRow]:
        return [
            as_row(HaltRow, r)
            for r in self._query("SELECT * FROM halts ORDER BY id DESC LIMIT ?", (limit,))
        ]

    def clear_halts(self, cleared_by: str, symbol: str | None = None) -> list[HaltRow]:
        """Clear every active halt, or with ``symbol`` only the halts of that one symbol (an
        all-symbol halt stays); a cleared balance mismatch asks the live account to re-baseline."""
        with self.transaction() as c:
            active = [h for h in self.active_halts() if symbol is None or h.symbol == symbol]
            c.execute(
                f"UPDATE halts SET cleared_ms = ?, cleared_by = ? WHERE id IN ({','.join('?' * len(active))})",
                (now_ms(), cleared_by, *(h.id for h in active)),
            )
            if any(h.reason == "balance_mismatch" for h in active):
                self.set_flag("live.rebaseline", "1")
        return active

    # -- risk days ----------------------------------------------------------------------------------
    def day_start_equity(self, day: str, symbol: str, mode: str, equity: float) -> float:
        """The equity recorded at the first check of this UTC day (``equity`` if this is the first)."""
        with self.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO risk_days (day, symbol, mode, start_equity) VALUES (?,?,?,?)",
                (day, symbol, mode, float(equity)),
            )
            return float(
                c.execute(
                    "SELECT start_equity FROM risk_days WHERE day = ? AND symbol = ? AND mode = ?",
                    (day, symbol, mode),
                ).fetchone()[0]
            )

    def kill_day(self, day: str, symbol: str, mode: str) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE risk_days SET killed_ms = coalesce(killed_ms, ?) WHERE day = ? AND symbol = ? AND mode = ?",
                (now_ms(), day, symbol, mode),
            )

    def day_killed(self, day: str, symbol: str, mode: str) -> bool:
        rows = self._query(
            "SELECT killed_ms FROM risk_days WHERE day = ? AND symbol = ? AND mode = ?",
            (day, symbol, mode),
        )
        return bool(rows and rows[0][0] is not None)
