"""One tick of the daemon: the pipeline once, at the close of a candle. No scheduler needed.

``Ticker.tick()`` at the emulated or real "now": fetch the new candles through ccxt into the store
(validated there), load the recent ones, render the chart with the model's ChartSpec, step the
policy with its recurrent state (carried in the ledger), apply the risk checks, execute through
the paper or live account, record the decision, and log ONE ``tick`` event with the decision and
the timings (fetch_ms, render_ms, policy_ms, order_ms, total_ms).

A tick is idempotent per candle: the decision for candle t is recorded before its order, so a tick
replayed after a crash or restart executes a recorded-but-unexecuted decision (under its recorded
position cap; a HOLD if a halt arrived meanwhile) and otherwise does nothing. Candles that closed while nobody ticked (daemon down, exchange unreachable) are logged as
missed, and the recurrent state is stepped over them before the next decision.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from chartrl.account.base import Candle
from chartrl.account.fills import MarketRules
from chartrl.account.ledger import Ledger
from chartrl.account.risk import RiskGuard
from chartrl.config.settings import Settings
from chartrl.daemon.clock import Clock, as_clock
from chartrl.daemon.model import WARMUP_CANDLES, PolicyRunner
from chartrl.daemon.tick_guards import TickGuards, exchange_settings
from chartrl.errors import ChartrlError, DataError, TemporaryError, TradingHalted
from chartrl.logs import get_logger
from chartrl.market.candles import to_ms
from chartrl.market.exchange import make_exchange
from chartrl.market.store import CandleStore
from chartrl.strategies.base import Action
from chartrl.timeframe import (
    candle_close_ms,
    candles_between,
    last_closed_open_ms,
    shift_open_ms,
)

ACTIONS = {0: "hold", 1: "buy", 2: "sell"}


@dataclass
class TickResult:
    symbol: str
    candle_ms: int
    """Open time of the candle decided on (the newest closed one)."""
    status: str
    """done | recovered (executed a decision recorded before a crash) | skipped (already done) | missed."""
    action: int | None = None
    final_action: int | None = None
    reason: str | None = None
    price: float | None = None
    equity: float | None = None
    position: float | None = None
    order: dict[str, Any] | None = None
    missed: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def as_log(self) -> dict[str, Any]:
        d = asdict(self)
        d["candle"] = pd.Timestamp(self.candle_ms, unit="ms", tz="UTC").isoformat()
        for k in ("action", "final_action"):
            if d[k] is not None:
                d[k] = ACTIONS.get(d[k], d[k])
        return d


class Ticker(TickGuards):
    """The tick of one symbol; construct once, call :meth:`tick` at every candle close."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | Any = None,
        exchange: Any = None,
        ledger: Ledger | None = None,
        device: Any = None,
        live: bool = False,
    ) -> None:
        self.settings = settings
        self.symbol = settings.market.symbol
        self.timeframe = settings.market.timeframe
        self.mode = settings.trading.mode
        self.clock = as_clock(clock)
        self.log = get_logger("chartrl.tick", symbol=self.symbol, mode=self.mode)
        self.exchange = exchange or make_exchange(exchange_settings(settings))
        self.store = CandleStore(settings.data_dir)
        self.ledger = ledger or Ledger.for_data_dir(settings.data_dir)
        self._own_ledger = ledger is None
        self.runner = PolicyRunner(settings, device)
        self.ledger.record_model_version(
            self.symbol,
            self.runner.version,
            str(self.runner.model_dir),
            {"strategy": self.runner.strategy, "event": "start"},
        )
        self.account = self._make_account(live)
        self._check_market()
        self.risk = RiskGuard(
            settings.risk,
            self.ledger,
            symbol=self.symbol,
            timeframe=self.timeframe,
            mode=self.mode,
            halt_file=settings.halt_file,
        )
        self.hidden: Any = None
        self.hidden_ms: int | None = None
        saved = (
            self.ledger.load_hidden(self.symbol, self.runner.device)
            if self.runner.recurrent
            else None
        )
        if saved is not None and saved[2] == self.runner.version:
            self.hidden, self.hidden_ms = saved[0], saved[1]
        self.last: TickResult | None = None
        self.ticks = self.missed = 0
        self._reported_missed: set[int] = set()

    # ----------------------------------------------------------------------------- set-up
    def _market_rules(self) -> MarketRules:
        """The paper account's fills: the exchange's market as it is now, else the stored copy (the
        rules the backtest and the retrain use), else the config's fee with a warning."""
        from chartrl.market.markets import market_rules

        rules, source = market_rules(self.settings, self.exchange)
        self.log.info(
            "market_rules",
            source=source,
            fee=rules.fee,
            amount_step=rules.amount_step,
            min_amount=rules.min_amount,
            min_notional=rules.min_notional,
        )
        return rules

    def _make_account(self, live: bool) -> Any:
        if self.mode == "paper":
            from chartrl.account.paper import PaperAccount

            return PaperAccount(
                self.ledger,
                symbol=self.symbol,
                initial_cash=self.settings.trading.initial_cash,
                rules=self._market_rules(),
                clock=self.clock.now_ms,
            )
        from chartrl.account.live import LiveAccount, OrdersUnresolved

        if not self.settings.exchange.api_url:
            # Signed requests carry the exchange's time (ccxt measures the offset at
            # load_markets): a drifting local clock must not have orders refused as stale. (Not
            # for the emulator: its clock is simulated and jumps; it accepts wall-clock stamps.)
            self.exchange.options["adjustForTimeDifference"] = True
        account = LiveAccount(self.settings, self.ledger, live=live, exchange=self.exchange)
        try:
            account.start()  # reconciles unfinished orders, compares balances
        except TradingHalted as exc:
            # Recorded in the ledger: the risk check holds until `chartrl halt clear`, and the next
            # order starts the account again. Exiting instead would only make systemd restart us
            # into the same halt until it gives up.
            self.log.error("started_halted", error=str(exc))
        except OrdersUnresolved as exc:
            # A lost order is looked up again at every tick (with backoff) until it resolves.
            self.log.warning("started_with_unresolved_orders", error=str(exc))
        return account

    def close(self) -> None:
        if self._own_ledger:
            self.ledger.close()

    # ------------------------------------------------------------------------------ the tick
    def tick(self) -> TickResult:
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        # A candle is final by the exchange's clock, not ours (invariant 9).
        local = self.clock.now_ms()
        now = self._exchange_now(local)
        target = last_closed_open_ms(now, self.timeframe)
        if abs(now - local) > self._max_skew_ms():
            return self._missed(
                target,
                "clock_skew",
                f"the exchange's clock is {(now - local) / 1000:+.1f} s from ours (limit "
                f"daemon.max_clock_skew_seconds = {self.settings.daemon.max_clock_skew_seconds:g}); "
                "fix the system clock (NTP)",
                timings | {"total_ms": _ms(t_start)},
            )

        if self.runner.changed():
            self._reload_model()

        t0 = time.perf_counter()
        fetch_error = None
        last = self.store.last_timestamp(self.settings.exchange.id, self.symbol, self.timeframe)
        screen = self._screen(last)
        try:
            from chartrl.market.fetch import update_series

            # Fetch the newest stored candle again: a revised one (the exchange corrected it, or
            # we stored it too early) replaces it instead of staying wrong for good.
            since = None if last is None else min(int(to_ms(last)), target)
            update_series(
                self.settings,
                since=None if since is None else pd.Timestamp(since, unit="ms", tz="UTC"),
                progress=False,
                exchange=self.exchange,
                store=self.store,
                now_ms=lambda: now,
                screen=screen,
            )
        except TemporaryError as exc:
            fetch_error = str(
                exc
            )  # stored candles may still hold the target; else the tick is missed
        timings["fetch_ms"] = _ms(t0)

        t0 = time.perf_counter()
        history = self.runner.history_needed()
        try:
            candles = self.store.load(
                self.settings.exchange.id,
                self.symbol,
                self.timeframe,
                start=pd.Timestamp(
                    shift_open_ms(target, self.timeframe, -history), unit="ms", tz="UTC"
                ),
                end=pd.Timestamp(target, unit="ms", tz="UTC"),
            )
        except DataError as exc:  # nothing stored in that range (yet)
            return self._missed(
                target,
                "fetch_failed" if fetch_error else "no_candles",
                fetch_error or str(exc),
                timings | {"total_ms": _ms(t_start)},
            )
        last_ms = int(to_ms(candles["timestamp"].iloc[-1]))
        load_ms = _ms(t0)
        if last_ms != target and target in screen.held:
            return self._missed(
                target,
                "price_quarantined",
                "the candle's prices are outside data.price_band of the last trusted close",
                timings | {"total_ms": _ms(t_start)},
            )
        if last_ms != target:
            return self._missed(
                target,
                "fetch_failed" if fetch_error else "candle_not_available",
                fetch_error,
                timings | {"total_ms": _ms(t_start)},
            )

        previous = self._last_decision()
        if previous is not None and previous["candle_ms"] >= target:
            return self._replay(previous, candles, timings, t_start)
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
                first=_iso(candle_close_ms(previous["candle_ms"], self.timeframe)),
                last=_iso(shift_open_ms(target, self.timeframe, -1)),
                reason="no tick while these candles closed",
            )

        close = float(candles["close"].iloc[-1])
        position = self.account.position_features(close)
        hidden = self._hidden_before(target, candles, position)
        decision = self.runner.decide(candles, position, hidden)
        timings["render_ms"] = round(load_ms + decision.render_ms, 2)
        timings["policy_ms"] = decision.policy_ms

        equity = self.account.equity(close)
        pos_value = self.account.position * close
        budget = min(self.account.cash, equity * self.settings.trading.position_fraction)
        verdict = self.risk.check(
            decision.action,
            candle_ms=target,
            equity=equity,
            position_value=pos_value,
            buy_budget=budget,
            now_ms=now,
        )
        details = {"q": decision.q, **verdict.as_details(), "position_features": list(position)}
        with self.ledger.transaction():
            decision_id = self.ledger.record_decision(
                symbol=self.symbol,
                mode=self.mode,
                candle_ms=target,
                action=decision.action,
                final_action=verdict.action,
                reason=verdict.reason,
                model_version=self.runner.version,
                price=close,
                details=details,
            )
            if self.runner.recurrent:
                self.ledger.save_hidden(self.symbol, decision.hidden, target, self.runner.version)
        self.hidden, self.hidden_ms = decision.hidden, target

        t0 = time.perf_counter()
        order = self._execute(verdict.action, target, close, verdict.max_notional, decision_id)
        timings["order_ms"] = _ms(t0)
        timings["total_ms"] = _ms(t_start)
        result = TickResult(
            self.symbol,
            target,
            "done",
            decision.action,
            verdict.action,
            verdict.reason,
            close,
            self.account.equity(),
            self.account.position,
            order,
            gap,
            timings,
        )
        return self._finish(result)

    # ------------------------------------------------------------------------ pieces
    def _last_decision(self) -> dict[str, Any] | None:
        rows = [d for d in self.ledger.decisions(self.symbol, limit=20) if d["mode"] == self.mode]
        return rows[0] if rows else None

    def _hidden_before(
        self, target: int, candles: pd.DataFrame, position: tuple[float, float]
    ) -> Any:
        """The recurrent state after candle target-1: carried, stepped over a gap, or re-warmed."""
        if not self.runner.recurrent:
            return None
        before = candles.iloc[:-1]
        if self.hidden is not None and self.hidden_ms is not None:
            gap = candles_between(self.hidden_ms, target, self.timeframe) - 1
            if gap == 0:
                return self.hidden
            if 0 < gap <= WARMUP_CANDLES:
                return self.runner.warm(before, gap, position, self.hidden)
        self.log.info(
            "hidden_rewarmed",
            candles=WARMUP_CANDLES,
            version=self.runner.version,
            why="no saved state for this model"
            if self.hidden is None
            else "gap longer than the warm-up",
        )
        return self.runner.warm(before, WARMUP_CANDLES, position, None)

    def _reload_model(self) -> None:
        old = self.runner.version
        try:
            runner = PolicyRunner(self.settings, self.runner.device)
        except Exception as exc:  # noqa: BLE001 - any broken new model: keep trading with the old
            # Mid-swap or a malformed champion: keep the loaded one, try again next tick.
            msg = str(exc) if isinstance(exc, ChartrlError) else f"{type(exc).__name__}: {exc}"
            self.log.error("model_reload_failed", error=msg[:500], kept=old)
            return
        self.runner = runner
        self.hidden = self.hidden_ms = (
            None  # re-warmed over recent candles before the next decision
        )
        self.ledger.record_model_version(
            self.symbol,
            self.runner.version,
            str(self.runner.model_dir),
            {"strategy": self.runner.strategy, "event": "reload", "previous": old},
        )
        self.log.info("model_reloaded", previous=old, version=self.runner.version)

    def _fill_candle(self, target: int, close: float, action: int) -> Candle:
        """Candle t+1 as far as it exists at the tick: its open (the fill price), marked there."""
        nxt = candle_close_ms(target, self.timeframe)
        price = close
        if action != Action.HOLD:  # paper fills there; live sizes its market order from it
            try:
                rows = self.exchange.fetch_ohlcv(self.symbol, self.timeframe, since=nxt, limit=1)
                if rows and int(rows[0][0]) == nxt:
                    price = float(rows[0][1])
            except Exception as exc:  # noqa: BLE001 - the close of t is the open of t+1 up to a tick
                self.log.warning(
                    "next_open_unavailable",
                    error=str(exc)[:200],
                    using="close of the decided candle",
                )
        return Candle(nxt, price, price, price, price, 0.0)

    def _execute(
        self, action: int, target: int, close: float, max_notional: float | None, decision_id: int
    ) -> dict[str, Any] | None:
        # Every tick executes, HOLD too: paper marks and persists its book, live reconciles and
        # compares balances (a mismatch halts) even when nothing is sent.
        candle = self._fill_candle(target, close, action)
        try:
            fill = self.account.execute(
                action, candle, max_notional=max_notional, decision_id=decision_id
            )
        except TradingHalted as exc:
            # The halt is in the ledger (the account logged it): later ticks hold, the daemon runs on.
            self.log.warning("execution_halted", error=str(exc), sent="nothing")
            return None
        if fill is None:
            return None
        return {"side": fill.side, "price": fill.price, "amount": fill.amount, "fee": fill.fee}

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
            self.log.debug("tick_already_done", candle=_iso(target))
            return TickResult(
                self.symbol, target, "skipped", timings=timings | {"total_ms": _ms(t_start)}
            )
        # Recorded before a crash, never executed: execute it now (the fill is still at t+1's open),
        # under the same position cap, unless a halt arrived meanwhile.
        details = json.loads(previous["details"] or "{}")
        halt = self.risk.halted()
        action = Action.HOLD if halt else previous["final_action"]
        t0 = time.perf_counter()
        order = self._execute(action, target, close, details.get("max_notional"), previous["id"])
        timings["order_ms"] = _ms(t0)
        timings["total_ms"] = _ms(t_start)
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
        self.log.warning("tick_missed", candle=_iso(target), count=1, reason=reason, error=error)
        result = TickResult(self.symbol, target, "missed", reason=reason, missed=1, timings=timings)
        self.last = result
        if reason == "fetch_failed":
            raise TemporaryError(f"tick for {_iso(target)} missed: {error}")
        return result

    def record_missed(self, scheduled_ms: int, reason: str) -> None:
        """The scheduler skipped a run (too late). The daemon logged it (one ``tick_missed``);
        here it is only remembered, so the next tick's gap check does not report it again."""
        self.missed += 1
        self._reported_missed.add(last_closed_open_ms(scheduled_ms, self.timeframe))
        self.log.debug("tick_missed_recorded", reason=reason)

    def _finish(self, result: TickResult) -> TickResult:
        self.ticks += 1
        self.last = result
        self.log.info("tick", **result.as_log(), model_version=self.runner.version)
        return result

    def status_text(self) -> str:
        """One line for systemd's STATUS=."""
        r = self.last
        pos = f"pos {self.account.position:.6g}"
        eq = f"equity {self.account.equity():,.2f}"
        last = (
            f"last {_iso(r.candle_ms)} {ACTIONS.get(r.final_action, r.status)}"
            if r
            else "no tick yet"
        )
        text = f"{self.mode} {self.symbol} {self.timeframe} | {pos} | {eq} | {last}"
        halt = self.risk.halted()
        if halt == "ledger_halt":
            halt = ", ".join(sorted({h.reason for h in self.ledger.active_halts(self.symbol)}))
        return text + (f" | HALTED ({halt}): chartrl halt clear resumes" if halt else "")


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()
