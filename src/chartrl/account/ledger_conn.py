"""The ledger's connection: the SQLite file, its migration on open, transactions, and flags.

One file, ``<data dir>/ledger.sqlite``, in WAL mode so that readers (``chartrl status``, ``chartrl
halt show``) never block the daemon and the daemon never blocks them. A writing open migrates the
schema (:mod:`chartrl.account.migrations`); a read-only open refuses a schema it does not read.
Writes that belong together happen in one :meth:`LedgerConnection.transaction`, so a kill leaves
either all of them or none. The tables' reads and writes are the mixins that
:class:`chartrl.account.ledger.Ledger` joins.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Self, TypeVar

from chartrl.account.migrations import MIGRATIONS, Migration, migrate
from chartrl.errors import ChartrlError

LEDGER_FILE = "ledger.sqlite"
_R = TypeVar("_R")


def now_ms() -> int:
    return int(time.time() * 1000)


def ledger_path(data_dir: Path) -> Path:
    return Path(data_dir).expanduser() / LEDGER_FILE


def as_row(cls: type[_R], row: sqlite3.Row) -> _R:
    """A row dataclass from a result row."""
    # Only the known columns: a newer migration may add columns an older reader does not know.
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: row[k] for k in row.keys() if k in names})


class LedgerConnection:
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
    def for_data_dir(cls, data_dir: Path, readonly: bool = False) -> Self:
        return cls(ledger_path(data_dir), readonly=readonly)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
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

    @staticmethod
    def _filters(**kw: Any) -> tuple[list[str], list[Any]]:
        where = [f"{k} = ?" for k, v in kw.items() if v is not None]
        return where, [v for v in kw.values() if v is not None]

    # -- flags: small named values several parts share (``live.rebaseline``) ----------------------
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
