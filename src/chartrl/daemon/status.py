"""What ``chartrl status`` shows, read while the daemon runs without disturbing it.

Two sources: ``<data dir>/daemon.json`` (the daemon rewrites it atomically after every tick: pid,
mode, next tick, tick counts) and the ledger, opened read-only (SQLite ``mode=ro``) so a status
query can never take a write lock or change anything.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chartrl.actions import ACTIONS
from chartrl.errors import DataError
from chartrl.symbols import base_quote

STATE_FILE = "daemon.json"


def write_daemon_state(data_dir: Path, **state: Any) -> None:
    """Atomically replace ``daemon.json`` (a reader sees the old or the new file, never half)."""
    data_dir = Path(data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    state["updated"] = datetime.now(UTC).isoformat()
    fd, tmp = tempfile.mkstemp(prefix=".daemon.", suffix=".json", dir=data_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, data_dir / STATE_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_daemon_state(data_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(data_dir).expanduser() / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user (the chartrl service user)
    return True


def find_ledger(data_dir: Path) -> Path | None:
    from chartrl.account.ledger_conn import ledger_path

    path = ledger_path(Path(data_dir).expanduser())
    return path if path.is_file() else None


def open_readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot write (and waits briefly rather than failing on the writer's lock)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    conn.row_factory = sqlite3.Row
    return conn


@dataclass
class Status:
    running: bool = False
    pid: int | None = None
    mode: str | None = None
    symbol: str | None = None
    timeframe: str | None = None
    model_version: str | None = None
    position: float | None = None
    cash: float | None = None
    equity: float | None = None
    initial_equity: float | None = None
    last_price: float | None = None
    last_tick: str | None = None
    last_candle: str | None = None
    last_decision: str | None = None
    last_reason: str | None = None
    next_tick: str | None = None
    next_retrain: str | None = None
    last_retrain: dict[str, Any] | None = None
    open_orders: list[dict[str, Any]] = field(default_factory=list)
    halts: list[dict[str, Any]] = field(default_factory=list)
    external: dict[str, float] | None = None
    """Live: holdings on the exchange account the bot did not buy (it never sells them)."""
    ticks_done: int | None = None
    ticks_missed: int | None = None
    ledger: str | None = None
    per_symbol: list[Any] = field(default_factory=list)
    """Several symbols: a :class:`~chartrl.daemon.status_symbols.SymbolLine` each."""
    total: Any = None
    """Several symbols: their equity together in the reporting currency (a ``Total``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(ms: int | None) -> str | None:
    return (
        None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
    )


def _schema_gap(exc: sqlite3.OperationalError) -> bool:
    """An older or newer schema without that table or column: show what we can. Anything else
    (unreadable, locked, corrupt) must not pass for "nothing there"."""
    return str(exc).startswith(("no such table", "no such column"))


def _one(conn: sqlite3.Connection, sql: str, *args: Any) -> sqlite3.Row | None:
    try:
        return conn.execute(sql, args).fetchone()
    except sqlite3.OperationalError as exc:
        if _schema_gap(exc):
            return None
        raise


def _all(conn: sqlite3.Connection, sql: str, *args: Any) -> list[sqlite3.Row]:
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        if _schema_gap(exc):
            return []
        raise


def read_status(
    data_dir: Path,
    symbol: str | None = None,
    mode: str | None = None,
    *,
    reporting: str | None = None,
    exchange: str = "binance",
    timeframe: str | None = None,
) -> Status:
    """Everything ``chartrl status`` prints; never writes. With several symbols (and no
    ``symbol`` asked for) also a line per symbol and the total in ``reporting`` (default: the
    first symbol's quote), converted at prices from the ledger or the candle store on ``exchange``.

    Raises DataError (naming the file) when the data dir or its ledger is missing, unreadable or
    corrupt: a status that could not read the halts must never say there are none."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataError(
            f"data dir {data_dir} does not exist or is not a directory; check --data-dir, "
            "data.dir or CHARTRL_DATA_DIR"
        )
    state = read_daemon_state(data_dir)
    st = Status(
        pid=state.get("pid"),
        running=pid_alive(state.get("pid")),
        mode=mode or state.get("mode"),
        symbol=symbol or (state.get("symbols") or [None])[0],
        timeframe=state.get("timeframe"),
        next_tick=state.get("next_tick"),
        next_retrain=state.get("next_retrain"),
        ticks_done=state.get("ticks_done"),
        ticks_missed=state.get("ticks_missed"),
    )
    from chartrl.account.ledger_conn import ledger_path

    path = ledger_path(data_dir)
    if not path.is_file():
        raise DataError(
            f"no ledger at {path}: nothing has traded on this data dir yet; check --data-dir, "
            "or start the daemon (`chartrl run`)"
        )
    st.ledger = str(path)
    try:
        conn = open_readonly(path)
        try:
            _fill_from_ledger(conn, st)
            if symbol is None:
                _fill_symbols(conn, st, state, data_dir, reporting, exchange, timeframe)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise DataError(_unreadable(path, exc)) from None
    return st


def _fill_symbols(
    conn: sqlite3.Connection,
    st: Status,
    state: dict[str, Any],
    data_dir: Path,
    reporting: str | None,
    exchange: str,
    timeframe: str | None,
) -> None:
    from chartrl.daemon import status_symbols as ss

    symbols = list(state.get("symbols") or [])
    traded = [
        r[0]
        for r in _all(
            conn,
            "SELECT symbol FROM decisions"
            + (" WHERE mode = ?" if st.mode else "")
            + " GROUP BY symbol ORDER BY min(id)",
            *((st.mode,) if st.mode else ()),
        )
    ]
    symbols += [x for x in traded if x not in symbols]  # one the daemon no longer trades, too
    if len(symbols) < 2:
        return
    st.halts = _halts(conn, None)  # every symbol's, each naming its symbol
    st.per_symbol = ss.symbol_lines(
        conn, _fill_from_ledger, symbols, st.mode, state.get("health") or {}
    )
    st.total = ss.total(
        conn,
        data_dir,
        st.per_symbol,
        reporting or base_quote(symbols[0])[1],
        mode=st.mode,
        exchange=exchange,
        timeframe=timeframe or st.timeframe or "1h",
    )


def _unreadable(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return (
            f"ledger {path} is corrupt ({text}); restore it from a backup, or move it aside "
            "(the daemon then starts a new one and re-baselines live balances)"
        )
    return f"cannot read ledger {path}: {text}; check its permissions and those of {path.parent}"


def _fill_from_ledger(conn: sqlite3.Connection, st: Status) -> None:
    where, args = "", ()
    if st.symbol and st.mode:
        where, args = " WHERE symbol = ? AND mode = ?", (st.symbol, st.mode)
    row = _one(conn, f"SELECT * FROM decisions{where} ORDER BY id DESC LIMIT 1", *args)
    if row is not None:
        st.symbol, st.mode = st.symbol or row["symbol"], st.mode or row["mode"]
        st.last_tick = _iso(row["created_ms"])
        st.last_candle = _iso(row["candle_ms"])
        st.last_decision = ACTIONS.get(row["final_action"], str(row["final_action"]))
        if row["final_action"] != row["action"]:
            st.last_decision += f" (policy said {ACTIONS.get(row['action'], row['action'])})"
        st.last_reason = row["reason"]
        st.model_version = row["model_version"]
        st.last_price = row["price"]
    mv = _one(
        conn,
        "SELECT version FROM model_versions"
        + (" WHERE symbol = ?" if st.symbol else "")
        + " ORDER BY id DESC LIMIT 1",
        *((st.symbol,) if st.symbol else ()),
    )
    if mv is not None:
        st.model_version = mv["version"]
    if st.mode in (None, "paper"):
        book = _one(
            conn,
            "SELECT * FROM paper_books" + (" WHERE symbol = ?" if st.symbol else "") + " LIMIT 1",
            *((st.symbol,) if st.symbol else ()),
        )
        if book is not None:
            st.position, st.cash, st.initial_equity = (
                book["position"],
                book["cash"],
                book["initial_cash"],
            )
            price = book["last_price"] or st.last_price
            if price is not None:
                st.equity = book["cash"] + book["position"] * price
    if st.mode == "live" and st.symbol:
        bal = _one(
            conn,
            "SELECT data FROM balances WHERE mode = 'live' AND kind = 'exchange' AND symbol = ? "
            "ORDER BY id DESC LIMIT 1",
            st.symbol,
        )
        # "vs start" is the first baseline's value when it was taken (in the quote currency), not
        # its amounts revalued at today's price, which would hide every gain or loss of the price.
        base = _one(
            conn,
            "SELECT equity FROM balances WHERE mode = 'live' AND kind = 'baseline' AND symbol = ? "
            "AND equity IS NOT NULL ORDER BY id ASC LIMIT 1",
            st.symbol,
        )
        own = _one(
            conn,
            "SELECT data FROM balances WHERE mode = 'live' AND kind = 'own' AND symbol = ? "
            "ORDER BY id DESC LIMIT 1",
            st.symbol,
        )
        if bal is not None:
            b, q = base_quote(st.symbol)
            data = json.loads(bal["data"])
            st.position, st.cash = data.get(b), data.get(q)
            if own is not None:  # the bot's own book; the rest of the account is not its own
                mine = json.loads(own["data"])
                st.position, st.cash = mine.get(b, 0.0), mine.get(q, 0.0)
                st.external = {
                    c: max(0.0, float(data.get(c) or 0.0) - float(mine.get(c) or 0.0))
                    for c in (b, q)
                }
            if st.last_price is not None and st.position is not None and st.cash is not None:
                st.equity = st.cash + st.position * st.last_price
        if base is not None:
            st.initial_equity = base["equity"]
    rr = _one(conn, "SELECT * FROM retrain_results ORDER BY id DESC LIMIT 1")
    if rr is not None:
        st.last_retrain = {
            "started": _iso(rr["started_ms"]),
            "finished": _iso(rr["finished_ms"]),
            "status": rr["status"],
            "promoted": bool(rr["promoted"]),
            "champion": rr["champion"],
            "challenger": rr["challenger"],
            "metrics": json.loads(rr["metrics"]) if rr["metrics"] else None,
            "error": rr["error"],
            "symbol": rr["symbol"] if "symbol" in rr.keys() else None,
        }
    st.open_orders = [
        {k: r[k] for k in ("client_order_id", "symbol", "side", "amount", "filled", "state")}
        | {"created": _iso(r["created_ms"])}
        for r in _all(
            conn,
            "SELECT * FROM orders WHERE state NOT IN ('filled', 'canceled', 'rejected') ORDER BY created_ms",
        )
    ]
    st.halts = _halts(conn, st.symbol)


def _halts(conn: sqlite3.Connection, symbol: str | None) -> list[dict[str, Any]]:
    """Active halts; with ``symbol``, those that stop it (its own and the all-symbol ones)."""
    return [
        {
            "since": _iso(r["created_ms"]),
            "reason": r["reason"],
            "source": r["source"],
            "details": r["details"],
            "symbol": r["symbol"] if "symbol" in r.keys() else None,
        }
        for r in _all(conn, "SELECT * FROM halts WHERE cleared_ms IS NULL ORDER BY id")
        if symbol is None or "symbol" not in r.keys() or r["symbol"] in (None, symbol)
    ]


# The text block lives beside the reader; importers keep using status.format_status.
from chartrl.daemon.status_format import format_status  # noqa: E402, F401
