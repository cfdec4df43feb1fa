"""Risk limits applied to every action before any account (paper or live) executes it.

:meth:`RiskGuard.check` takes the policy's action and answers a :class:`RiskVerdict`: the action to
execute (possibly HOLD or a kill-switch SELL instead), an optional cap on what a buy may spend, and
a named reason. The caller logs the verdict and records it with the decision in the ledger.

Checks, first match wins:

1. ``halt_file`` — the operator's halt file exists (``touch <data dir>/HALT``): HOLD.
2. ``ledger_halt`` — the ledger has an active halt (balance mismatch, operational error,
   ``chartrl halt set``): HOLD until ``chartrl halt clear``.
3. ``stale_data`` — the newest closed candle closed more than ``risk.stale_after_timeframes``
   timeframes ago: HOLD (the chart is not the market any more).
4. ``daily_loss_flatten`` / ``daily_loss_stop_buying`` — equity fell ``risk.max_daily_loss`` below
   the UTC day's first recorded equity: the kill switch latches for the rest of the day and either
   sells the position (flatten) or refuses buys (stop_buying).
5. ``max_orders_per_day`` — this UTC day's orders reached ``risk.max_orders_per_day``: HOLD.
6. ``max_position_value`` — a buy is refused when the position is already worth the limit, else its
   spend is capped to the room left (``max_position_value_capped``).
7. ``max_total_quote`` — the same for the positions of every symbol with this symbol's quote
   currency together (``risk.max_total_quote``, one limit per quote currency, no conversion
   between them): the other symbols' own positions, from their fills, at their last prices.

Every limit and counter is per symbol (its own orders, its own day's equity, its own kill switch);
only a halt without a symbol, the halt file and the total limit span symbols.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chartrl.account.ledger import Ledger
from chartrl.actions import Action
from chartrl.config.settings import RiskSettings
from chartrl.logs import get_logger
from chartrl.symbols import base_quote
from chartrl.timeframe import candle_close_ms, timeframe_ms

OK = "ok"


@dataclass(frozen=True)
class RiskVerdict:
    requested: int
    """The policy's action."""
    action: int
    """The action to execute."""
    reason: str
    """'ok' or the name of the check that changed or capped the action."""
    max_notional: float | None = None
    """Most a buy may spend, quote currency (None = no cap)."""

    @property
    def allowed(self) -> bool:
        return self.reason == OK

    def as_details(self) -> dict[str, object]:
        return {
            "risk_reason": self.reason,
            "requested": int(self.requested),
            "max_notional": self.max_notional,
        }


def utc_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


class RiskGuard:
    """The risk limits of one symbol in one mode (paper or live)."""

    def __init__(
        self,
        risk: RiskSettings,
        ledger: Ledger,
        *,
        symbol: str,
        timeframe: str,
        mode: str,
        halt_file: Path | None = None,
    ) -> None:
        self.risk = risk
        self.ledger = ledger
        self.symbol = symbol
        self.mode = mode
        self.timeframe = timeframe
        self.timeframe_ms = timeframe_ms(timeframe)
        self.quote = base_quote(symbol)[1]
        self.halt_file = Path(
            halt_file or risk.halt_file or ledger.path.parent / "HALT"
        ).expanduser()
        self.log = get_logger("chartrl.risk", symbol=symbol, mode=mode)

    def halted(self) -> str | None:
        """The halt reason in force, or None."""
        if self.halt_file.exists():
            return "halt_file"
        if self.ledger.active_halts(self.symbol):
            return "ledger_halt"
        return None

    def check(
        self,
        action: int,
        *,
        candle_ms: int,
        equity: float,
        position_value: float,
        buy_budget: float | None = None,
        now_ms: int | None = None,
    ) -> RiskVerdict:
        """The verdict on ``action`` decided on the candle opened at ``candle_ms``.

        ``equity`` and ``position_value`` are marked at the latest price; ``buy_budget`` is what a
        buy would spend without limits (for the capped/not-capped reason).
        """
        now = int(now_ms if now_ms is not None else time.time() * 1000)
        verdict = self._check(int(action), candle_ms, equity, position_value, buy_budget, now)
        if not verdict.allowed:
            self.log.warning(
                "risk_check",
                reason=verdict.reason,
                requested=Action(verdict.requested).name,
                action=Action(verdict.action).name,
                max_notional=verdict.max_notional,
                equity=equity,
            )
        return verdict

    def _check(
        self,
        action: int,
        candle_ms: int,
        equity: float,
        position_value: float,
        buy_budget: float | None,
        now: int,
    ) -> RiskVerdict:
        r = self.risk
        halt = self.halted()
        if halt:
            return RiskVerdict(action, Action.HOLD, halt)
        # The close is calendar-exact (a 31-day month closes a day after 30 would say); the allowance
        # counts nominal timeframes (30 days for 1M), a tolerance where a day either way is no matter.
        closed_at = candle_close_ms(candle_ms, self.timeframe)
        if now - closed_at > r.stale_after_timeframes * self.timeframe_ms:
            return RiskVerdict(action, Action.HOLD, "stale_data")
        day = utc_day(now)
        start = self.ledger.day_start_equity(day, self.symbol, self.mode, equity)
        killed = self.ledger.day_killed(day, self.symbol, self.mode)
        if not killed and start > 0 and equity <= start * (1 - r.max_daily_loss):
            self.ledger.kill_day(day, self.symbol, self.mode)
            self.log.error(
                "kill_switch",
                day=day,
                start_equity=start,
                equity=equity,
                loss=1 - equity / start,
                on_daily_loss=r.on_daily_loss,
            )
            killed = True
        if killed:
            if r.on_daily_loss == "flatten":
                # Reducing risk is never held back by the order cap.
                return RiskVerdict(
                    action, Action.SELL if position_value > 0 else Action.HOLD, "daily_loss_flatten"
                )
            if action == Action.BUY:
                return RiskVerdict(action, Action.HOLD, "daily_loss_stop_buying")
        if action == Action.HOLD:
            return RiskVerdict(action, action, OK)
        day_start_ms = int(
            datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000
        )
        if (
            self.ledger.count_orders_since(day_start_ms, self.mode, self.symbol)
            >= r.max_orders_per_day
        ):
            return RiskVerdict(action, Action.HOLD, "max_orders_per_day")
        if action != Action.BUY:
            return RiskVerdict(action, action, OK)
        verdict = RiskVerdict(action, action, OK)
        rooms = []
        if r.max_position_value is not None:
            rooms.append(("max_position_value", r.max_position_value - max(position_value, 0.0)))
        total = r.max_total_quote.get(self.quote)
        if total is not None:
            from chartrl.account.exposure import quote_exposure

            others = quote_exposure(self.ledger, self.mode, self.quote, exclude=self.symbol)
            rooms.append(("max_total_quote", total - others - max(position_value, 0.0)))
        for name, room in rooms:  # the tighter limit names the verdict
            if room <= 0:
                return RiskVerdict(action, Action.HOLD, name)
            if verdict.max_notional is None or room < verdict.max_notional:
                capped = buy_budget is None or buy_budget > room
                verdict = RiskVerdict(
                    action, action, f"{name}_capped" if capped else OK, max_notional=room
                )
        return verdict
