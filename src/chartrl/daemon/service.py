"""The daemon: an APScheduler 3.x scheduler around the tick, the nightly retrain, signals and sd_notify.

The daemon holds no trading logic of its own: a tick is :class:`chartrl.daemon.tick.Ticker`, a
retrain is the ``chartrl retrain`` command in a child process. The daemon only decides *when*
they run and how the process behaves as a service:

* one tick job per configured symbol at each candle close + ``daemon.tick_delay_seconds``, and the
  retrain job on ``daemon.retrain_cron`` (UTC) (:mod:`chartrl.daemon.service_jobs`);
* the retrain as a subprocess so its memory, GPU and crashes stay out of the trading process
  (:mod:`chartrl.daemon.service_retrain`);
* SIGTERM/SIGINT: let the running tick finish, flush, exit 0; SIGHUP: reload the configuration
  (:mod:`chartrl.daemon.service_signals`);
* this module, the life of the process: the data-dir lock, the start-up (temporary failures
  retried), daemon.json, the heartbeat loop and the shutdown; sd_notify: READY=1 after the start-up
  checks, WATCHDOG=1 while healthy (no tick stuck longer than ``daemon.stuck_tick_seconds``),
  STATUS=..., STOPPING=1.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chartrl.config.settings import Settings
from chartrl.daemon import lock
from chartrl.daemon.sdnotify import Notifier, heartbeat_interval
from chartrl.daemon.service_jobs import ServiceJobs
from chartrl.daemon.service_retrain import RetrainChild
from chartrl.daemon.service_signals import ServiceSignals
from chartrl.daemon.status import write_daemon_state
from chartrl.daemon.symbol_tickers import SymbolHealth
from chartrl.errors import TemporaryError
from chartrl.logs import get_logger
from chartrl.timeframe import timeframe_seconds

log = get_logger("chartrl.daemon")

START_RETRY_SECONDS = 180.0
"""Longest the start-up waits out temporary failures. The units' TimeoutStartSec (300 s) must leave
room beyond it for the last attempt and the model load (tests/test_systemd.py checks the two)."""


def start_with_retry(
    build: Callable[[], Any], stop: threading.Event, budget_seconds: float = START_RETRY_SECONDS
) -> Any:
    """``build()``, retried while it fails for a temporary reason (exchange unreachable, an order
    still being reconciled) for at most ``budget_seconds``; None when stopped meanwhile."""
    deadline = time.monotonic() + budget_seconds
    delay = 0.5
    while True:
        try:
            return build()
        except TemporaryError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TemporaryError(
                    f"{exc}; gave up after {budget_seconds:.0f} s of start-up retries"
                ) from exc
            wait = min(delay, left)
            log.warning(
                "start_retry", error=str(exc), in_seconds=round(wait, 2), gives_up_in=round(left, 1)
            )
            if stop.wait(wait):
                return None
            delay = min(delay * 2, 30.0)


class Daemon(ServiceJobs, RetrainChild, ServiceSignals):
    """Runs until SIGTERM/SIGINT. ``ticker_factory(settings)`` builds the per-symbol tick objects."""

    def __init__(
        self,
        settings: Settings,
        ticker_factory: Callable[[Settings], Any],
        config_path: Path | None = None,
        reload_settings: Callable[[], Settings] | None = None,
        notifier: Notifier | None = None,
        cli_overrides: Sequence[str] = (),
        on_reload: Callable[[Settings], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ticker_factory = ticker_factory
        self.config_path = config_path
        self.cli_overrides = list(cli_overrides)
        """Command-line options the settings came from (``--data-dir X``); the retrain child gets them too."""
        self.reload_settings = reload_settings
        self.on_reload = on_reload
        """Called with the new settings after a reload took: what runs beside the daemon (the
        console) follows it. It logs its own failures; ticks run on meanwhile (scheduler threads)."""
        self.notifier = notifier or Notifier()
        self.ticker: Any = None
        self.scheduler: Any = None
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wakeup = threading.Event()  # interrupts the heartbeat wait (signal, stop request)
        self._lock = threading.Lock()  # one tick at a time; reload swaps the ticker under it
        self._tick_started: float | None = None
        self._last_progress = time.monotonic()
        """When the last tick finished (or the start): a scheduler that stopped firing shows here."""
        self._retrain_proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self.ticks_done = 0
        self.ticks_missed = 0
        self.health = SymbolHealth()

    # ------------------------------------------------------------- daemon.json
    def _write_state(self) -> None:
        nxt = self.next_tick()
        retrain = self.scheduler.get_job("retrain") if self.scheduler else None
        write_daemon_state(
            self.settings.data_dir,
            pid=os.getpid(),
            mode=self.settings.trading.mode,
            symbols=self.symbols,
            timeframe=self.settings.market.timeframe,
            next_tick=nxt.isoformat() if nxt else None,
            next_retrain=retrain.next_run_time.isoformat()
            if retrain and retrain.next_run_time
            else None,
            ticks_done=self.ticks_done,
            ticks_missed=self.ticks_missed,
            health=self._symbol_health(),
        )

    def _symbol_health(self) -> dict[str, dict[str, Any]]:
        return self.health.snapshot(self.symbols, getattr(self.ticker, "start_errors", None))

    # ---------------------------------------------------------------- run
    def run(self) -> int:
        """Start-up checks, then serve until a stop signal; returns the exit code."""
        from chartrl.daemon.checks import check_daemon_settings

        check_daemon_settings(self.settings)  # exit 2 on what `chartrl config check` refuses
        # One writer per data dir: a second daemon (or a fetch, import, retrain) is refused here.
        data_dir = self.settings.data_dir
        self._lock_fd = lock.acquire(data_dir, "chartrl run")
        try:
            return self._serve()
        finally:
            lock.release(data_dir)
            self._lock_fd = None

    def _serve(self) -> int:
        from apscheduler.events import EVENT_JOB_MISSED
        from apscheduler.schedulers.background import BackgroundScheduler

        self.install_signals()
        # Loads the model, opens the ledger, reconciles live orders: a bad setting fails here, a
        # temporary outage is waited out (within systemd's TimeoutStartSec), a live halt (balance
        # mismatch, unknown order) is recorded and the daemon runs on holding (see tick_orders.py).
        self.ticker = start_with_retry(lambda: self.ticker_factory(self.settings), self._stop)
        if self.ticker is None:
            return 0
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self._schedule()
        self.scheduler.start()
        self._write_state()
        nxt = self.next_tick()
        log.info(
            "daemon_started",
            mode=self.settings.trading.mode,
            symbols=self.symbols,
            timeframe=self.settings.market.timeframe,
            next_tick=nxt.isoformat() if nxt else None,
            pid=os.getpid(),
        )
        self.notifier.ready(self.ticker.status_text())
        beat = heartbeat_interval(self.notifier, self.settings.daemon.heartbeat_seconds)
        stuck_since: float | None = None  # the stuck tick already reported
        stalled_since: float | None = None  # the stall already reported
        self._last_progress = time.monotonic()
        try:
            while not self._stop.is_set():
                self._wakeup.wait(beat)
                self._wakeup.clear()
                if self._reload.is_set():
                    self._reload.clear()
                    self._do_reload()
                started = self._tick_started
                limit = self.settings.daemon.stuck_tick_seconds
                # Only a healthy daemon pings. A tick is seconds; one hung far longer (a wedged
                # socket, a deadlock) is fixed by a restart, whatever the timeframe. So is a
                # scheduler that stopped firing: no tick finished for two timeframes + the grace.
                idle = time.monotonic() - self._last_progress
                stalled = started is None and idle > self._progress_limit()
                if (started is None or time.monotonic() - started < limit) and not stalled:
                    self.notifier.watchdog()
                elif stalled:
                    if stalled_since != self._last_progress:
                        stalled_since = self._last_progress
                        log.error(
                            "ticks_stalled",
                            seconds=round(idle),
                            limit=round(self._progress_limit()),
                            action="watchdog pings stopped: systemd restarts the service after WatchdogSec",
                        )
                elif stuck_since != started:
                    stuck_since = started
                    log.error(
                        "tick_stuck",
                        seconds=round(time.monotonic() - started),
                        limit=limit,
                        action="watchdog pings stopped: systemd restarts the service after WatchdogSec",
                    )
        finally:
            self._shutdown()
        return 0

    def _progress_limit(self) -> float:
        """Longest a healthy daemon goes without finishing a tick: two timeframes, plus the start
        grace (the tick delay and the longest a tick may run)."""
        d = self.settings.daemon
        tf = timeframe_seconds(self.settings.market.timeframe)
        return 2 * tf + d.tick_delay_seconds + d.stuck_tick_seconds

    def _shutdown(self) -> None:
        self.notifier.stopping("stopping: finishing the running tick")
        log.info("daemon_stopping")
        proc = self._retrain_proc
        if proc is not None and proc.poll() is None:
            # The retrain writes its challenger to a temporary dir: stopping it loses nothing.
            proc.terminate()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.pause()
        # Taking the tick lock waits for a running tick to finish. (APScheduler's shutdown(wait=True)
        # would hold its job-store lock meanwhile, which the tick's bookkeeping needs: a deadlock.)
        with self._lock:
            if self.scheduler is not None and self.scheduler.running:
                self.scheduler.shutdown(wait=False)
            if self.ticker is not None:
                self.ticker.close()
        write_daemon_state(
            self.settings.data_dir,
            pid=None,
            mode=self.settings.trading.mode,
            symbols=self.symbols,
            timeframe=self.settings.market.timeframe,
            stopped=datetime.now(UTC).isoformat(),
            ticks_done=self.ticks_done,
            ticks_missed=self.ticks_missed,
            health=self._symbol_health(),
        )
        log.info("daemon_stopped", ticks_done=self.ticks_done, ticks_missed=self.ticks_missed)
        self.notifier.close()
