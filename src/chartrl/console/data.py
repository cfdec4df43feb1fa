"""What the console shows, read from the data dir without ever writing to it.

The ledger is opened read-only (SQLite ``mode=ro``, as ``chartrl status`` does), so the console can
neither corrupt a book nor take the daemon's write lock. Each call opens and closes its own
connection: the daemon's WAL commits are then visible to the next request, and a request never
holds a snapshot open across ticks.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from chartrl.actions import ACTIONS
from chartrl.backtest.metrics import drawdown_series
from chartrl.config.settings import Settings
from chartrl.console.downsample import envelope_indices
from chartrl.daemon.status import find_ledger, open_readonly, read_status
from chartrl.errors import DataError
from chartrl.timeframe import candle_close_ms, timeframe_ms


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Series:
    """Which book the console shows: the daemon's (daemon.json), else the config's."""

    symbol: str
    mode: str
    timeframe: str


class ConsoleData:
    """Read-only views of one data dir (the ledger, daemon.json, the model, the candle store)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection | None]:
        path = find_ledger(self.data_dir)
        if path is None:
            yield None
            return
        conn = open_readonly(path)
        try:
            yield conn
        finally:
            conn.close()

    def series(self) -> Series:
        st = read_status(self.data_dir)
        s = self.settings
        return Series(
            st.symbol or s.market.symbol,
            st.mode or s.trading.mode,
            st.timeframe or s.market.timeframe,
        )

    @staticmethod
    def _rows(conn: sqlite3.Connection | None, sql: str, *args: Any) -> list[sqlite3.Row]:
        if conn is None:
            return []
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # a table this ledger does not have yet
            return []

    # ------------------------------------------------------------------ views
    def status(self) -> dict[str, Any]:
        return read_status(self.data_dir).to_dict()

    def health(self) -> tuple[bool, str, dict[str, Any]]:
        """(healthy, reason, facts): healthy while the last tick is younger than two timeframes."""
        try:
            st = read_status(self.data_dir)
        except DataError as exc:  # no data dir or no ledger yet: nothing has ticked
            return False, f"no tick recorded: {exc}", {"last_tick": None}
        tf = st.timeframe or self.settings.market.timeframe
        limit_s = 2 * timeframe_ms(tf) / 1000
        facts: dict[str, Any] = {"last_tick": st.last_tick, "timeframe": tf, "limit_s": limit_s}
        if st.last_tick is None:
            return False, "no tick recorded in the ledger yet", facts
        age = (datetime.now(UTC) - datetime.fromisoformat(st.last_tick)).total_seconds()
        facts["age_s"] = round(age, 1)
        if age > limit_s:
            return False, f"last tick {age:.0f} s ago, more than two {tf} candles", facts
        return True, "ticking", facts

    def equity(
        self, start_ms: int | None = None, end_ms: int | None = None, points: int | None = None
    ) -> dict[str, Any]:
        """Equity at the close of every decided candle, rebuilt from the book's own fills, with
        buy and hold (the starting equity in the coin at the first decision's close, no fees).
        ``points``: at most that many, each bucket's extremes of all three lines kept (downsample)."""
        ser = self.series()
        with self._conn() as conn:
            decisions = self._rows(
                conn,
                "SELECT candle_ms, price FROM decisions WHERE symbol = ? AND mode = ? "
                "AND price IS NOT NULL AND id IN (SELECT max(id) FROM decisions "
                "WHERE symbol = ? AND mode = ? GROUP BY candle_ms) ORDER BY candle_ms",
                *(ser.symbol, ser.mode) * 2,
            )
            fills = self._rows(
                conn,
                "SELECT timestamp_ms, side, amount, cost, fee FROM fills "
                "WHERE symbol = ? AND mode = ? ORDER BY timestamp_ms, rowid",
                ser.symbol,
                ser.mode,
            )
            initial = self._initial_equity(conn, ser)
        cash, pos, k = initial, 0.0, 0
        opens = np.fromiter((d["candle_ms"] for d in decisions), np.int64, len(decisions))
        t = candle_close_ms(opens, ser.timeframe).tolist()
        eq, price = [], [d["price"] for d in decisions]
        for close, p in zip(t, price, strict=True):
            # Decided at the close of candle t, filled at the open of t+1: the fills before t's
            # close are in the book it was marked with.
            while k < len(fills) and fills[k]["timestamp_ms"] < close:
                cash, pos = _apply(cash, pos, fills[k])
                k += 1
            eq.append(cash + pos * p)
        while k < len(fills):
            cash, pos = _apply(cash, pos, fills[k])
            k += 1
        e = np.asarray(eq, dtype=np.float64)
        p = np.asarray(price, dtype=np.float64)
        hold = initial * p / p[0] if len(p) else p
        lo = 0 if start_ms is None else int(np.searchsorted(t, start_ms, "left"))
        hi = len(t) if end_ms is None else int(np.searchsorted(t, end_ms, "right"))
        # From the book's running peak whatever the range: a zoom must not shrink a fall.
        part, hold, dd = e[lo:hi], hold[lo:hi], drawdown_series(e)[lo:hi]
        keep = envelope_indices([part, hold, dd], points) if points else np.arange(len(part))
        return {
            "symbol": ser.symbol,
            "mode": ser.mode,
            "initial_equity": initial,
            "cash": cash,
            "position": pos,
            "time": [iso(t[lo + i]) for i in keep],
            "equity": part[keep].tolist(),
            "buy_and_hold": hold[keep].tolist(),
            "drawdown": dd[keep].tolist(),
            "max_drawdown": float(0.0 - dd.min()) if len(dd) else 0.0,
            "decided": len(part),
        }

    def _initial_equity(self, conn: sqlite3.Connection | None, ser: Series) -> float:
        if ser.mode == "live":
            rows = self._rows(
                conn,
                "SELECT equity FROM balances WHERE mode = 'live' AND kind = 'baseline' "
                "AND symbol = ? AND equity IS NOT NULL ORDER BY id LIMIT 1",
                ser.symbol,
            )
        else:
            rows = self._rows(
                conn, "SELECT initial_cash FROM paper_books WHERE symbol = ?", ser.symbol
            )
        return float(rows[0][0]) if rows else float(self.settings.trading.initial_cash)

    def trades(self, limit: int) -> list[dict[str, Any]]:
        ser = self.series()
        with self._conn() as conn:
            rows = self._rows(
                conn,
                "SELECT f.*, o.decision_id, o.state FROM fills f "
                "LEFT JOIN orders o ON o.client_order_id = f.client_order_id "
                "WHERE f.symbol = ? AND f.mode = ? ORDER BY f.timestamp_ms DESC, f.rowid DESC LIMIT ?",
                ser.symbol,
                ser.mode,
                limit,
            )
        return [
            {
                "time": iso(r["timestamp_ms"]),
                "side": r["side"],
                "price": r["price"],
                "amount": r["amount"],
                "cost": r["cost"],
                "fee": r["fee"],
                "fee_currency": r["fee_currency"],
                "client_order_id": r["client_order_id"],
                "trade_id": r["trade_id"],
                "decision_id": r["decision_id"],
            }
            for r in rows
        ]

    def decisions(self, limit: int) -> list[dict[str, Any]]:
        ser = self.series()
        with self._conn() as conn:
            rows = self._rows(
                conn,
                "SELECT * FROM decisions WHERE symbol = ? AND mode = ? ORDER BY id DESC LIMIT ?",
                ser.symbol,
                ser.mode,
                limit,
            )
            ids = [r["id"] for r in rows]
            fills: dict[int, list[dict[str, Any]]] = {}
            if ids:
                marks = ",".join("?" * len(ids))
                for f in self._rows(
                    conn,
                    "SELECT o.decision_id, f.side, f.price, f.amount, f.fee, f.timestamp_ms "
                    f"FROM fills f JOIN orders o ON o.client_order_id = f.client_order_id "
                    f"WHERE o.decision_id IN ({marks}) ORDER BY f.timestamp_ms",
                    *ids,
                ):
                    fills.setdefault(f["decision_id"], []).append(
                        {
                            "side": f["side"],
                            "price": f["price"],
                            "amount": f["amount"],
                            "fee": f["fee"],
                            "time": iso(f["timestamp_ms"]),
                        }
                    )
        out = []
        for r in rows:
            details = json.loads(r["details"]) if r["details"] else {}
            out.append(
                {
                    "id": r["id"],
                    "time": iso(r["created_ms"]),
                    "candle": iso(r["candle_ms"]),
                    "price": r["price"],
                    "action": ACTIONS.get(r["action"], str(r["action"])),
                    "final_action": ACTIONS.get(r["final_action"], str(r["final_action"])),
                    "q": dict(zip(ACTIONS.values(), details["q"], strict=False))
                    if details.get("q")
                    else None,
                    "risk": {
                        "verdict": r["reason"],
                        "requested": ACTIONS.get(details.get("requested"), None),
                        "max_notional": details.get("max_notional"),
                    },
                    "model_version": r["model_version"],
                    "fill": (fills.get(r["id"]) or [None])[0],
                }
            )
        return out

    def halts(self, limit: int = 50) -> dict[str, Any]:
        with self._conn() as conn:
            rows = self._rows(conn, "SELECT * FROM halts ORDER BY id DESC LIMIT ?", limit)
        listed = [
            {
                "id": r["id"],
                "since": iso(r["created_ms"]),
                "reason": r["reason"],
                "source": r["source"],
                "details": r["details"],
                "cleared": iso(r["cleared_ms"]),
                "cleared_by": r["cleared_by"],
                "symbol": r["symbol"] if "symbol" in r.keys() else None,  # None: every symbol
            }
            for r in rows
        ]
        hf = self.settings.halt_file
        return {
            "halted": hf.exists() or any(h["cleared"] is None for h in listed),
            "halt_file": {"path": str(hf), "exists": hf.exists()},
            "active": [h for h in listed if h["cleared"] is None],
            "history": listed,
        }

    def retrains(self, limit: int) -> list[dict[str, Any]]:
        with self._conn() as conn:
            rows = self._rows(conn, "SELECT * FROM retrain_results ORDER BY id DESC LIMIT ?", limit)
        return [
            {
                "id": r["id"],
                "started": iso(r["started_ms"]),
                "finished": iso(r["finished_ms"]),
                "status": r["status"],
                "promoted": bool(r["promoted"]),
                "champion": r["champion"],
                "challenger": r["challenger"],
                "metrics": json.loads(r["metrics"]) if r["metrics"] else None,
                "error": r["error"],
            }
            for r in rows
        ]

    def order_states(self) -> list[dict[str, Any]]:
        with self._conn() as conn:
            rows = self._rows(
                conn, "SELECT mode, state, count(*) AS n FROM orders GROUP BY mode, state"
            )
        return [dict(r) for r in rows]

    def latency_rows(self, symbol: str, mode: str) -> list[tuple[int, int]]:
        """(recorded ms, candle open ms) of every decision of the book."""
        with self._conn() as conn:
            rows = self._rows(
                conn,
                "SELECT created_ms, candle_ms FROM decisions WHERE symbol = ? AND mode = ?",
                symbol,
                mode,
            )
        return [(r[0], r[1]) for r in rows]

    def model_saved_at(self) -> datetime | None:
        from chartrl.errors import CheckpointError
        from chartrl.train.checkpoint import read_meta

        try:
            saved = read_meta(self.settings.model_dir).get("saved_at")
            return datetime.fromisoformat(saved) if saved else None
        except (CheckpointError, ValueError, TypeError):
            return None

    def model(self) -> dict[str, Any]:
        """The champion: model.json's description, its training history, lineage and last scores."""
        from chartrl.errors import CheckpointError
        from chartrl.train.checkpoint import read_meta

        model_dir = self.settings.model_dir
        out: dict[str, Any] = {"dir": str(model_dir), "strategy": self.settings.model.strategy}
        try:
            meta = read_meta(model_dir)
        except CheckpointError as exc:
            out["error"] = str(exc)
            meta = {}
        keep = ("strategy", "saved_at", "data_range", "parent", "series", "indicators", "metrics")
        out |= {k: meta[k] for k in keep if k in meta}
        if meta.get("weights_sha256"):
            out["version"] = str(meta["weights_sha256"])[:12]
        if meta.get("chart_spec"):
            out["chart_spec"] = meta["chart_spec"]
        out["history"] = _history(model_dir / "history.csv")
        ser = self.series()
        with self._conn() as conn:
            rows = self._rows(
                conn,
                "SELECT created_ms, version, info FROM model_versions WHERE symbol = ? "
                "ORDER BY id DESC LIMIT 50",
                ser.symbol,
            )
        out["lineage"] = [
            {"time": iso(r["created_ms"]), "version": r["version"]}
            | (json.loads(r["info"]) if r["info"] else {})
            for r in rows
        ]
        last = next((r for r in self.retrains(20) if r["metrics"]), None)
        out["skill"] = (
            {
                "retrain_id": last["id"],
                "status": last["status"],
                "champion_score": last["metrics"].get("champion_score"),
                "challenger_score": last["metrics"].get("challenger_score"),
                "reason": last["metrics"].get("reason"),
                "champion": last["metrics"].get("champion"),
                "challenger": last["metrics"].get("challenger"),
                "buyhold": last["metrics"].get("buyhold"),
            }
            if last
            else None
        )
        return out


def _apply(cash: float, pos: float, fill: sqlite3.Row) -> tuple[float, float]:
    # The fill model's own arithmetic (account/fills.py): the fee is paid in the quote currency.
    if fill["side"] == "buy":
        return cash - fill["cost"] - fill["fee"], pos + fill["amount"]
    return cash + fill["cost"] - fill["fee"], pos - fill["amount"]


def _history(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return []
    return [{k: _number(v) for k, v in r.items()} for r in rows]


def _number(v: str | None) -> Any:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return v
