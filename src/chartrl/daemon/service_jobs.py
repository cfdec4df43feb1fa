"""The daemon's jobs on the scheduler: one tick job per symbol, its retry, misfires, the retrain.

* one tick job per configured symbol at each candle close + ``daemon.tick_delay_seconds``
  (``max_instances=1``, ``coalesce=True``, a misfire grace; a missed run is logged and recorded);
  a tick that failed for a temporary reason is tried once more while its candle is young;
* the retrain job on ``daemon.retrain_cron`` (UTC), when ``daemon.retrain_enabled``.

One symbol's failure is caught in its own job: the other symbols' jobs run on. A mixin of
:class:`chartrl.daemon.service.Daemon` (needs ``settings``, ``ticker``, ``scheduler``,
``notifier``, ``health``, the tick counters, ``_stop``, ``_lock``, ``_tick_started``,
``_last_progress``, ``_retrain_job`` and ``_write_state``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from chartrl.daemon.triggers import retrain_trigger, tick_trigger
from chartrl.errors import ChartrlError, OperationalError, TemporaryError
from chartrl.logs import get_logger
from chartrl.timeframe import timeframe_seconds

log = get_logger("chartrl.daemon")


class ServiceJobs:
    """The scheduled jobs; see the module docstring."""

    def _ticker_of(self, symbol: str) -> Any:
        """The tick object of ``symbol``: from a per-symbol set (SymbolTickers.get, which may
        raise for a symbol that cannot start), or the one ticker itself."""
        pick = getattr(self.ticker, "get", None)
        return pick(symbol) if pick is not None else self.ticker

    def _tick_job(self, symbol: str) -> None:
        # One symbol's failure is caught here, in its own job: the other symbols' jobs run on.
        with self._lock:
            if self._stop.is_set():
                return  # submitted just before the stop: the next start catches this candle up
            self._tick_started = time.monotonic()
            try:
                result = self._ticker_of(symbol).tick()
                self.ticks_done += 1
                self.notifier.status(self.ticker.status_text())
                missed = getattr(result, "status", None) == "missed"
                self.health.record(
                    symbol, "missed" if missed else "ok", getattr(result, "reason", None)
                )
            except TemporaryError as exc:
                log.warning("tick_failed", symbol=symbol, error=str(exc), kind="TemporaryError")
                self.health.record(symbol, "failing", str(exc))
                self._schedule_retry(symbol)
            except ChartrlError as exc:
                log.error("tick_failed", symbol=symbol, error=str(exc), kind=type(exc).__name__)
                self.health.record(symbol, "failing", str(exc))
                if isinstance(exc, OperationalError):
                    self.notifier.status(f"HALTED {symbol}: {exc}")
            except Exception as exc:  # noqa: BLE001 - a bug in one tick must not kill the service
                log.exception("tick_crashed", symbol=symbol, error=f"{type(exc).__name__}: {exc}")
                self.health.record(symbol, "failing", f"{type(exc).__name__}: {exc}")
            finally:
                self._tick_started = None
                self._last_progress = time.monotonic()
                self._write_state()

    def _schedule_retry(self, symbol: str) -> None:
        """One more try of a tick that failed for a temporary reason, while its candle is young."""
        tf = timeframe_seconds(self.settings.market.timeframe)
        delay = max(5.0, min(60.0, tf / 10))
        when = datetime.now(UTC) + timedelta(seconds=delay)
        nxt = self.next_tick()
        if self.scheduler is None or (nxt is not None and when >= nxt - timedelta(seconds=tf / 2)):
            return  # too close to the next candle: that tick catches up
        self.scheduler.add_job(
            self._tick_job,
            "date",
            run_date=when,
            args=[symbol],
            id=f"retry:{symbol}",
            replace_existing=True,
            misfire_grace_time=int(delay),
        )
        log.info("tick_retry_scheduled", symbol=symbol, at=when.isoformat())

    def _on_missed(self, event: Any) -> None:
        if not str(event.job_id).startswith("tick:"):
            log.warning(
                "job_missed", job=event.job_id, scheduled=event.scheduled_run_time.isoformat()
            )
            return
        self.ticks_missed += 1
        sched_ms = int(event.scheduled_run_time.timestamp() * 1000)
        log.warning(
            "tick_missed", symbol=event.job_id[5:], scheduled=event.scheduled_run_time.isoformat()
        )
        try:
            if self.ticker is not None:
                self._ticker_of(event.job_id[5:]).record_missed(
                    sched_ms, reason="scheduler misfire"
                )
        except Exception as exc:  # noqa: BLE001 - recording is best effort; the log line is the record
            log.warning("tick_missed_not_recorded", error=str(exc))

    # ------------------------------------------------------------ set-up
    def _schedule(self) -> None:
        from apscheduler.jobstores.base import JobLookupError

        s = self.settings
        d = s.daemon
        grace = max(1, int(min(timeframe_seconds(s.market.timeframe) / 2, 600)))
        for job in self.scheduler.get_jobs():
            # A reload that changed the symbol: the old symbol's tick (and pending retry) must go.
            kind, _, symbol = job.id.partition(":")
            if kind in ("tick", "retry") and symbol not in self.symbols:
                try:
                    self.scheduler.remove_job(job.id)
                except JobLookupError:
                    pass  # a retry that has just run and removed itself
                log.info("job_removed", job=job.id, why="symbol no longer configured")
        for symbol in self.symbols:
            self.scheduler.add_job(
                self._tick_job,
                tick_trigger(s.market.timeframe, d.tick_delay_seconds),
                args=[symbol],
                id=f"tick:{symbol}",
                name=f"tick {symbol} {s.market.timeframe}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=grace,
                replace_existing=True,
            )
        if d.retrain_enabled:
            self.scheduler.add_job(
                self._retrain_job,
                retrain_trigger(d.retrain_cron),
                id="retrain",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=3600,
                replace_existing=True,
            )
        elif self.scheduler.get_job("retrain"):
            self.scheduler.remove_job("retrain")

    @property
    def symbols(self) -> list[str]:
        return self.settings.market.all_symbols

    def next_tick(self) -> datetime | None:
        if self.scheduler is None:
            return None
        times = [
            j.next_run_time
            for j in self.scheduler.get_jobs()
            if j.id.startswith("tick:") and j.next_run_time
        ]
        return min(times) if times else None
