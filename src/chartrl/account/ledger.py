"""The SQLite ledger: every decision, order, fill, balance, halt and piece of state that a restart needs.

One file, ``<data dir>/ledger.sqlite``, in WAL mode so that readers (``chartrl status``, ``chartrl
halt show``) never block the daemon and the daemon never blocks them. Writes that belong together
(an order's new state and its fills, a paper book and the fill that changed it) happen in one
transaction (:meth:`Ledger.transaction`), so a kill leaves either all of them or none.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from chartrl.account.migrations import FINAL_STATES, MIGRATIONS, ORDER_STATES, Migration, migrate
from chartrl.errors import ChartrlError

LEDGER_FILE = "ledger.sqlite"
_R = TypeVar("_R")


def now_ms() -> int:
    return int(time.time() * 1000)


def ledger_path(data_dir: Path) -> Path:
    return Path(data_dir).expanduser() / LEDGER_FILE


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


def _row(cls: type[_R], row: sqlite3.Row) -> _R:
    # Only the known columns: a newer migration may add columns an older reader does not know.
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: row[k] for k in row.keys() if k in names})


class Ledger:
    """A connection to the ledger; safe to share between threads of one process."""

    def __init__(
        self,
        path: Path | str,
        *,
        readonly: bool = False,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self._lock = threading.RLock()
        self._depth = 0
        if readonly:
            if not self.path.is_file():
                raise ChartrlError(
                    f"no ledger at {self.path}; nothing has traded with this data dir yet"
                )
            self._conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(migrations):  # migrating cannot help: only a newer chartrl reads it
                raise ChartrlError(
                    f"ledger {self.path} is schema v{version}, newer than this chartrl reads "
                    f"(v{len(migrations)}); upgrade chartrl"
                )
            if version != len(migrations):
                raise ChartrlError(
                    f"ledger {self.path} is schema v{version}, this chartrl reads v{len(migrations)}; "
                    "start the daemon (or any writing command) once to migrate it"
                )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed order record survives a power cut, not just a process kill.
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            migrate(self._conn, self.path, migrations)
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.row_factory = sqlite3.Row

    @classmethod
    def for_data_dir(cls, data_dir: Path, readonly: bool = False) -> Ledger:
        return cls(ledger_path(data_dir), readonly=readonly)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write; nested uses join the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._depth = 0
                self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

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
        return _row(OrderRow, rows[0]) if rows else None

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
        return [_row(OrderRow, r) for r in self._query(sql, params)]

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
        return [_row(FillRow, r) for r in self._query(sql, params)]

    def last_fill_rowid(self) -> int:
        return int(self._query("SELECT coalesce(max(rowid), 0) FROM fills")[0][0])

    def fills_after_rowid(self, mode: str, symbol: str, rowid: int) -> list[FillRow]:
        """Fills recorded after the row ``rowid`` (the ones a balance baseline does not include yet)."""
        rows = self._query(
            "SELECT * FROM fills WHERE mode = ? AND symbol = ? AND rowid > ? ORDER BY rowid",
            (mode, symbol, rowid),
        )
        return [_row(FillRow, r) for r in rows]

    @staticmethod
    def _filters(**kw: Any) -> tuple[list[str], list[Any]]:
        where = [f"{k} = ?" for k, v in kw.items() if v is not None]
        return where, [v for v in kw.values() if v is not None]

    # -- balances and flags -----------------------------------------------------------------------
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

    def get_flag(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM ledger_state WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_flag(self, key: str, value: str | None) -> None:
        with self.transaction() as c:
            if value is None:
                c.execute("DELETE FROM ledger_state WHERE key = ?", (key,))
            else:
                c.execute(
                    "INSERT OR REPLACE INTO ledger_state (key, value) VALUES (?, ?)", (key, value)
                )

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
        return [_row(HaltRow, r) for r in self._query(sql + " ORDER BY id", params)]

    def halts(self, limit: int = 20) -> list[HaltRow]:
        return [
            _row(HaltRow, r)
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
