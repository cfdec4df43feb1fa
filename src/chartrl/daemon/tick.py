"""One tick of the daemon: the pipeline once, at the close of a candle. No scheduler needed.

``Ticker.tick()`` at the emulated or real "now": fetch the new candles through ccxt into the store
(validated there), load the recent ones, render the chart with the model's ChartSpec, step the
policy with its recurrent state (carried in the ledger), apply the risk checks, execute through
the paper or live account, record the decision, and log ONE ``tick`` event with the decision and
the timings (fetch_ms, render_ms, policy_ms, order_ms, total_ms).

A tick is idempotent per candle, and candles that closed while nobody ticked are logged as missed
(:mod:`chartrl.daemon.tick_replay`); the recurrent state is stepped over them before the next
decision. The pieces around the decision are mixins, each in its module: the checks of the
exchange's clock, markets and prices (:mod:`~chartrl.daemon.tick_guards`), the account and the
execution of a decision (:mod:`~chartrl.daemon.tick_orders`), the replay of a recorded decision and
the missed candles (:mod:`~chartrl.daemon.tick_replay`); what a tick reports is
:class:`~chartrl.daemon.tick_result.TickResult`.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from chartrl.account.ledger import Ledger
from chartrl.account.risk import RiskGuard
from chartrl.config.settings import Settings
from chartrl.daemon.clock import Clock, as_clock
from chartrl.daemon.model import WARMUP_CANDLES, PolicyRunner
from chartrl.daemon.tick_guards import TickGuards, exchange_settings
from chartrl.daemon.tick_orders import TickOrders
from chartrl.daemon.tick_replay import TickReplay
from chartrl.daemon.tick_result import ACTIONS, TickResult, iso, ms_since
from chartrl.errors import ChartrlError, DataError, TemporaryError
from chartrl.logs import get_logger
from chartrl.market.candles import to_ms
from chartrl.market.exchange import make_exchange
from chartrl.market.store import CandleStore
from chartrl.timeframe import candles_between, last_closed_open_ms, shift_open_ms


class Ticker(TickOrders, TickReplay, TickGuards):
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
                timings | {"total_ms": ms_since(t_start)},
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
        timings["fetch_ms"] = ms_since(t0)

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
                timings | {"total_ms": ms_since(t_start)},
            )
        last_ms = int(to_ms(candles["timestamp"].iloc[-1]))
        load_ms = ms_since(t0)
        if last_ms != target and target in screen.held:
            return self._missed(
                target,
                "price_quarantined",
                "the candle's prices are outside data.price_band of the last trusted close",
                timings | {"total_ms": ms_since(t_start)},
            )
        if last_ms != target:
            return self._missed(
                target,
                "fetch_failed" if fetch_error else "candle_not_available",
                fetch_error,
                timings | {"total_ms": ms_since(t_start)},
            )

        previous = self._last_decision()
        if previous is not None and previous["candle_ms"] >= target:
            return self._replay(previous, candles, timings, t_start)
        gap = self._report_gap(previous, target)

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
        timings["order_ms"] = ms_since(t0)
        timings["total_ms"] = ms_since(t_start)
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

    # ------------------------------------------------------------- the policy's state
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
            f"last {iso(r.candle_ms)} {ACTIONS.get(r.final_action, r.status)}"
            if r
            else "no tick yet"
        )
        text = f"{self.mode} {self.symbol} {self.timeframe} | {pos} | {eq} | {last}"
        halt = self.risk.halted()
        if halt == "ledger_halt":
            halt = ", ".join(sorted({h.reason for h in self.ledger.active_halts(self.symbol)}))
        return text + (f" | HALTED ({halt}): chartrl halt clear resumes" if halt else "")
