"""The ledger's state for a restart: balances, paper books, model versions, recurrent states and
retrain results.

What the daemon reads back when it starts again, and what ``chartrl status`` and the console show
of it. A mixin of :class:`chartrl.account.ledger.Ledger`.
"""

from __future__ import annotations

import json
from typing import Any

from chartrl.account.ledger_conn import LedgerConnection, now_ms


class LedgerState(LedgerConnection):
    """Balances, paper books, model versions, hidden states and retrain results."""

    # -- balances ---------------------------------------------------------------------------------
    def record_balances(
        self,
        mode: str,
        kind: str,
        data: dict[str, float],
        *,
        symbol: str | None = None,
        equity: float | None = None,
    ) -> int:
        """A snapshot ``{currency: amount}``; ``equity`` is its value in the quote currency then."""
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO balances (created_ms, mode, kind, data, symbol, equity) VALUES (?,?,?,?,?,?)",
                (now_ms(), mode, kind, json.dumps(data, sort_keys=True), symbol, equity),
            )
            return int(cur.lastrowid)

    def latest_balances(self, mode: str, kind: str) -> tuple[int, dict[str, float]] | None:
        """(row id, {currency: amount}) of the newest snapshot of that kind."""
        rows = self._query(
            "SELECT id, data FROM balances WHERE mode = ? AND kind = ? ORDER BY id DESC LIMIT 1",
            (mode, kind),
        )
        return (int(rows[0]["id"]), json.loads(rows[0]["data"])) if rows else None

    # -- paper books, model versions, hidden states, retrain results ------------------------------
    def save_paper_book(self, symbol: str, state: dict[str, Any]) -> None:
        cols = (
            "cash",
            "position",
            "entry_price",
            "fees_paid",
            "turnover",
            "initial_cash",
            "last_price",
            "last_candle_ms",
        )
        with self.transaction() as c:
            c.execute(
                f"INSERT OR REPLACE INTO paper_books (symbol, {', '.join(cols)}, updated_ms) VALUES (?{',?' * len(cols)},?)",
                (symbol, *(state[k] for k in cols), now_ms()),
            )

    def load_paper_book(self, symbol: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM paper_books WHERE symbol = ?", (symbol,))
        return dict(rows[0]) if rows else None

    def record_model_version(
        self, symbol: str, version: str, path: str | None = None, info: dict[str, Any] | None = None
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO model_versions (created_ms, symbol, version, path, info) VALUES (?,?,?,?,?)",
                (now_ms(), symbol, version, path, json.dumps(info) if info else None),
            )

    def current_model_version(self, symbol: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT * FROM model_versions WHERE symbol = ? ORDER BY id DESC LIMIT 1", (symbol,)
        )
        return dict(rows[0]) if rows else None

    def save_hidden(
        self, symbol: str, hidden: Any, candle_ms: int, model_version: str | None = None
    ) -> None:
        """Store the policy's recurrent state (None, a tensor, or a tuple of tensors) for ``symbol``."""
        from chartrl.account.hidden import pack_hidden

        meta, data = pack_hidden(hidden)
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO hidden_states (symbol, candle_ms, model_version, meta, data, updated_ms) VALUES (?,?,?,?,?,?)",
                (symbol, int(candle_ms), model_version, meta, data, now_ms()),
            )

    def load_hidden(self, symbol: str, device: Any = "cpu") -> tuple[Any, int, str | None] | None:
        """(hidden, candle_ms, model_version) as saved, or None when nothing was saved."""
        from chartrl.account.hidden import unpack_hidden

        rows = self._query("SELECT * FROM hidden_states WHERE symbol = ?", (symbol,))
        if not rows:
            return None
        r = rows[0]
        return unpack_hidden(r["meta"], r["data"], device), int(r["candle_ms"]), r["model_version"]

    def start_retrain(self, champion: str | None, symbol: str | None = None) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO retrain_results (started_ms, status, champion, symbol) VALUES (?, 'running', ?, ?)",
                (now_ms(), champion, symbol),
            )
            return int(cur.lastrowid)

    def finish_retrain(
        self,
        retrain_id: int,
        *,
        status: str,
        challenger: str | None = None,
        promoted: bool = False,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Close a retrain record: status promoted | kept | failed, with the metrics compared."""
        with self.transaction() as c:
            c.execute(
                "UPDATE retrain_results SET finished_ms = ?, status = ?, challenger = ?, promoted = ?, metrics = ?, error = ? WHERE id = ?",
                (
                    now_ms(),
                    status,
                    challenger,
                    int(promoted),
                    json.dumps(metrics) if metrics else None,
                    error,
                    retrain_id,
                ),
            )

    def retrain_results(self, limit: int = 20) -> list[dict[str, Any]]:
        out = []
        for r in self._query("SELECT * FROM retrain_results ORDER BY id DESC LIMIT ?", (limit,)):
            d = dict(r)
            d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else None
            d["promoted"] = bool(d["promoted"])
            out.append(d)
        return out
