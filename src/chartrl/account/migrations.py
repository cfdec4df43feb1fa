"""The ledger's schema as numbered migrations, and the runner that applies them.

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS[i]`` takes a ledger from version
``i`` to ``i + 1``. Before upgrading an existing ledger the file is copied to
``<file>.bak-v<old version>`` with SQLite's online backup (consistent even while another process
reads it), and each step runs in one transaction together with its version bump, so a crash
mid-migration leaves the old version intact.

Append new migrations at the end; never edit a released one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from chartrl.errors import ChartrlError

Migration = Sequence[str] | Callable[[sqlite3.Connection], None]

ORDER_STATES = (
    "pending",
    "sent",
    "open",
    "partially_filled",
    "filled",
    "canceled",
    "rejected",
    "unknown",
)
FINAL_STATES = ("filled", "canceled", "rejected")

_V1: list[str] = [
    """CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        symbol TEXT NOT NULL,
        mode TEXT NOT NULL,
        candle_ms INTEGER NOT NULL,        -- open time of the newest closed candle the policy saw
        action INTEGER NOT NULL,           -- what the policy answered (0 hold, 1 buy, 2 sell)
        final_action INTEGER NOT NULL,     -- what was executed after the risk checks
        reason TEXT NOT NULL,              -- the risk check's named reason ('ok' when unchanged)
        model_version TEXT,
        price REAL,
        details TEXT                       -- JSON: q-values, risk adjustments...
    )""",
    "CREATE INDEX decisions_symbol_candle ON decisions(symbol, mode, candle_ms)",
    f"""CREATE TABLE orders (
        client_order_id TEXT PRIMARY KEY,  -- ours, stored before the order is sent
        exchange_order_id TEXT,
        symbol TEXT NOT NULL,
        mode TEXT NOT NULL,
        side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
        type TEXT NOT NULL DEFAULT 'market',
        amount REAL NOT NULL,
        filled REAL NOT NULL DEFAULT 0,
        average REAL,
        cost REAL NOT NULL DEFAULT 0,
        state TEXT NOT NULL CHECK (state IN {ORDER_STATES!r}),
        decision_id INTEGER REFERENCES decisions(id),
        error TEXT,
        created_ms INTEGER NOT NULL,
        sent_ms INTEGER,
        updated_ms INTEGER NOT NULL,
        closed_ms INTEGER
    )""",
    "CREATE INDEX orders_state ON orders(mode, state)",
    "CREATE INDEX orders_created ON orders(mode, symbol, created_ms)",
    """CREATE TABLE fills (
        trade_id TEXT PRIMARY KEY,         -- the exchange's trade id: a fill is recorded once
        client_order_id TEXT NOT NULL REFERENCES orders(client_order_id),
        symbol TEXT NOT NULL,
        mode TEXT NOT NULL,
        side TEXT NOT NULL,
        price REAL NOT NULL,
        amount REAL NOT NULL,
        cost REAL NOT NULL,
        fee REAL NOT NULL DEFAULT 0,
        fee_currency TEXT,
        timestamp_ms INTEGER NOT NULL,
        recorded_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX fills_order ON fills(client_order_id)",
    """CREATE TABLE balances (
        id INTEGER PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        mode TEXT NOT NULL,
        kind TEXT NOT NULL,                -- exchange | baseline | expected
        data TEXT NOT NULL                 -- JSON {currency: total}
    )""",
    """CREATE TABLE paper_books (
        symbol TEXT PRIMARY KEY,
        cash REAL NOT NULL,
        position REAL NOT NULL,
        entry_price REAL NOT NULL,
        fees_paid REAL NOT NULL,
        turnover REAL NOT NULL,
        initial_cash REAL NOT NULL,
        last_price REAL,
        last_candle_ms INTEGER,            -- the newest candle already executed (a replay skips it)
        updated_ms INTEGER NOT NULL
    )""",
    """CREATE TABLE model_versions (
        id INTEGER PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        symbol TEXT NOT NULL,
        version TEXT NOT NULL,
        path TEXT,
        info TEXT
    )""",
    """CREATE TABLE hidden_states (
        symbol TEXT PRIMARY KEY,
        candle_ms INTEGER NOT NULL,        -- the candle after which this state was produced
        model_version TEXT,
        meta TEXT NOT NULL,                -- JSON: kind + [{shape, dtype}] per tensor
        data BLOB NOT NULL,
        updated_ms INTEGER NOT NULL
    )""",
    """CREATE TABLE retrain_results (
        id INTEGER PRIMARY KEY,
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        status TEXT NOT NULL,              -- running | promoted | kept | failed
        champion TEXT,
        challenger TEXT,
        promoted INTEGER NOT NULL DEFAULT 0,
        metrics TEXT,
        error TEXT
    )""",
    """CREATE TABLE halts (
        id INTEGER PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,              -- balance_mismatch | operational_error | manual | ...
        source TEXT NOT NULL,
        details TEXT,
        cleared_ms INTEGER,
        cleared_by TEXT
    )""",
    """CREATE TABLE risk_days (
        day TEXT NOT NULL,                 -- UTC date
        symbol TEXT NOT NULL,
        mode TEXT NOT NULL,
        start_equity REAL NOT NULL,
        killed_ms INTEGER,                 -- the daily-loss kill switch fired (latched for the day)
        PRIMARY KEY (day, symbol, mode)
    )""",
    """CREATE TABLE ledger_state (
        key TEXT PRIMARY KEY,              -- small flags, e.g. live balance re-baseline requested
        value TEXT
    )""",
]

# v2: a balance snapshot names its symbol (status shows the right pair when several share a ledger)
# and a live baseline keeps its value in the quote currency at the time, so "equity vs start" is not
# the old amounts revalued at today's price. v1 rows keep NULL in both.
_V2: list[str] = [
    "ALTER TABLE balances ADD COLUMN symbol TEXT",
    "ALTER TABLE balances ADD COLUMN equity REAL",
]

# v3: a daemon trading several symbols. A halt may target one symbol (`chartrl halt set --symbol
# X`); NULL, as every v2 halt, halts every symbol. A retrain names the symbol it retrained under
# model.per_symbol (NULL: the one model).
_V3: list[str] = [
    "ALTER TABLE halts ADD COLUMN symbol TEXT",
    "ALTER TABLE retrain_results ADD COLUMN symbol TEXT",
]

MIGRATIONS: list[Migration] = [_V1, _V2, _V3]


def backup_path(path: Path, version: int) -> Path:
    return path.with_name(f"{path.name}.bak-v{version}")


def migrate(
    conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Bring the ledger at ``path`` (open as ``conn``, autocommit) to the newest version; returns it."""
    target = len(migrations)
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > target:
        raise ChartrlError(
            f"ledger {path} has schema v{current}, newer than this chartrl knows (v{target}); upgrade chartrl"
        )
    if current == target:
        return current
    if current == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[
            0
        ]
        if tables:
            raise ChartrlError(
                f"{path} is an SQLite file but not a chartrl ledger (no schema version); move it away"
            )
    else:
        dest = sqlite3.connect(backup_path(path, current))
        try:
            conn.backup(dest)
        finally:
            dest.close()
    for version in range(current, target):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the write lock.
            if conn.execute("PRAGMA user_version").fetchone()[0] != version:
                conn.execute("ROLLBACK")
                continue
            step = migrations[version]
            if callable(step):
                step(conn)
            else:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return target
