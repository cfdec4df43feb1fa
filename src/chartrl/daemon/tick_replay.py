"""A tick's bookkeeping of candles: the decision already recorded, and the candles nobody ticked.

A tick is idempotent per candle: the decision for candle t is recorded before its order, so a tick
replayed after a crash or restart executes a recorded-but-unexecuted decision (under its recorded
position cap; a HOLD if a halt arrived meanwhile) and otherwise does nothing. Candles that closed
while nobody ticked (daemon down, exchange unreachable) are logged as missed, once each: a miss the
scheduler already reported is not reported again by the next tick's gap check. A mixin of
:class:`chartrl.daemon.tick.Ticker` (needs ``ledger``, ``account``, ``risk``, ``symbol``,
``timeframe``, ``mode``, ``log``, ``missed``, ``last``, ``_reported_missed``, ``_execute`` and
``_finish``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pandas as pd

from chartrl.daemon.tick_result import TickResult, iso, ms_since
from chartrl.errors import TemporaryError
from chartrl.strategies.base import Action
from chartrl.timeframe import candle_close_ms, candles_between, last_closed_open_ms, shift_open_ms


class TickReplay:
    """Replays and misses; see the module docstring."""

    def _last_decision(self) -> dict[str, Any] | None:
        rows = [d for d in self.ledger.decisions(self.symbol, limit=20) if d["mode"] == self.mode]
        return rows[0] if rows else None

    def _report_gap(self, previous: dict[str, Any] | None, target: int) -> int:
        """How many candles closed unticked between the previous decision and ``target``, less
        those the scheduler already reported; logs them (one ``tick_missed``) and counts them."""
        gap = (
            0
            if previous is None
            else candles_between(previous["candle_ms"], target, self.timeframe) - 1
        )
        reported = {
            m for m in self._reported_missed if previous and previous["candle_ms"] < m < target
        }
        self._reported_missed -= {m for m in self._reported_missed if m < target}
        gap -= len(reported)  # already reported as a scheduler misfire: one event per miss
        if gap > 0:
            self.missed += gap
            self.log.warning(
                "tick_missed",
                count=gap,
                first=iso(candle_close_ms(previous["candle_ms"], self.timeframe)),
                last=iso(shift_open_ms(target, self.timeframe, -1)),
                reason="no tick while these candles closed",
            )
        return gap

    def _executed(self, decision: dict[str, Any]) -> bool:
        if self.mode == "paper":
            last = getattr(self.account, "last_candle_ms", None)
            return last is not None and last >= candle_close_ms(
                decision["candle_ms"], self.timeframe
            )
        if decision["final_action"] == Action.HOLD:
            return True
        rows = self.ledger._query(
            "SELECT 1 FROM orders WHERE decision_id = ? LIMIT 1", (decision["id"],)
        )
        return bool(rows)

    def _replay(
        self,
        previous: dict[str, Any],
        candles: pd.DataFrame,
        timings: dict[str, float],
        t_start: float,
    ) -> TickResult:
        target = previous["candle_ms"]
        close = float(candles["close"].iloc[-1])
        if self._executed(previous):
            self.log.debug("tick_already_done", candle=iso(target))
            return TickResult(
                self.symbol, target, "skipped", timings=timings | {"total_ms": ms_since(t_start)}
            )
        # Recorded before a crash, never executed: execute it now (the fill is still at t+1's open),
        # under the same position cap, unless a halt arrived meanwhile.
        details = json.loads(previous["details"] or "{}")
        halt = self.risk.halted()
        action = Action.HOLD if halt else previous["final_action"]
        t0 = time.perf_counter()
        order = self._execute(action, target, close, details.get("max_notional"), previous["id"])
        timings["order_ms"] = ms_since(t0)
        timings["total_ms"] = ms_since(t_start)
        result = TickResult(
            self.symbol,
            target,
            "recovered",
            previous["final_action"],
            action,
            halt or "recovered",
            close,
            self.account.equity(),
            self.account.position,
            order,
            0,
            timings,
        )
        return self._finish(result)

    def _missed(
        self, target: int, reason: str, error: str | None, timings: dict[str, float]
    ) -> TickResult:
        self.missed += 1
        self.log.warning("tick_missed", candle=iso(target), count=1, reason=reason, error=error)
        result = TickResult(self.symbol, target, "missed", reason=reason, missed=1, timings=timings)
        self.last = result
        if reason == "fetch_failed":
            raise TemporaryError(f"tick for {iso(target)} missed: {error}")
        return result

    def record_missed(self, scheduled_ms: int, reason: str) -> None:
        """The scheduler skipped a run (too late). The daemon logged it (one ``tick_missed``);
        here it is only remembered, so the next tick's gap check does not report it again."""
        self.missed += 1
        self._reported_missed.add(last_closed_open_ms(scheduled_ms, self.timeframe))
        self.log.debug("tick_missed_recorded", reason=reason)
