"""The daemon: an APScheduler 3.x scheduler around the tick, the nightly retrain, signals and sd_notify.

The daemon holds no trading logic of its own: a tick is :class:`chartrl.daemon.tick.Ticker`, a
retrain is the ``chartrl retrain`` command in a child process. This module only decides *when*
they run and how the process behaves as a service:

* one tick job per configured symbol at each candle close + ``daemon.tick_delay_seconds``
  (``max_instances=1``, ``coalesce=True``, a misfire grace; a missed run is logged and recorded);
* the retrain job on ``daemon.retrain_cron`` (UTC), as a subprocess so its memory, GPU and crashes
  stay out of the trading process;
* SIGTERM/SIGINT: let the running tick finish, flush, exit 0; SIGHUP: reload the configuration;
* sd_notify: READY=1 after the start-up checks, WATCHDOG=1 while healthy (no tick stuck longer than
  ``daemon.stuck_tick_seconds``), STATUS=..., STOPPING=1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chartrl.config.settings import Settings
from chartrl.daemon import lock
from chartrl.daemon.lock import child_env
from chartrl.daemon.sdnotify import Notifier, heartbeat_interval
from chartrl.daemon.status import write_daemon_state
from chartrl.daemon.symbol_tickers import SymbolHealth
from chartrl.daemon.triggers import retrain_trigger, tick_trigger
from chartrl.errors import ChartrlError, ConfigError, OperationalError, TemporaryError
from chartrl.logs import get_logger
from chartrl.timeframe import timeframe_seconds

log = get_logger("chartrl.daemon")

START_RETRY_SECONDS = 180.0
"""Longest the start-up waits out temporary failures. The units' TimeoutStartSec (300 s) must leave
room beyond it for the last attempt and the model load (tests/test_systemd.py checks the two)."""


def retrain_command(config: Path | None, overrides: Sequence[str] = ()) -> list[str]:
    """The child process that runs one retrain cycle: same interpreter, same config, and the same
    command-line ``overrides`` (``--data-dir X --symbol Y``) as the daemon, so it retrains that series."""
    cmd = [sys.executable, "-m", "chartrl"]
    if config is not None:
        cmd += ["--config", str(config)]
    return [*cmd, "retrain", "--nice", "10", *overrides]


def child_limits(memory_mb: int | None) -> Callable[[], None]:
    """Run in the retrain child before exec: the kernel's OOM killer picks it before the trading
    process, and its address space is capped when ``memory_mb`` is set."""

    def limit() -> None:
        import resource

        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("500")
        except OSError:
            pass  # not Linux, or no /proc: the limit below still holds
        if memory_mb is not None:
            cap = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return limit


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


class Daemon:
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

    # ---------------------------------------------------------------- jobs
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

    def _retrain_job(self) -> None:
        cmd = retrain_command(self.config_path, self.cli_overrides)
        log.info("retrain_started", command=" ".join(cmd))
        t0 = time.monotonic()
        try:
            # The child lowers its own priority (--nice): the trading process keeps the CPU.
            # The child works under our data-dir lock: it inherits the locked descriptor.
            fd = self._lock_fd
            proc = self._retrain_proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                pass_fds=(fd,) if fd is not None else (),
                env=child_env(fd) if fd is not None else None,
                preexec_fn=child_limits(self.settings.daemon.retrain_memory_mb),  # noqa: PLW1509
            )
            code = self._wait_retrain(proc, self.settings.daemon.retrain_timeout)
        except OSError as exc:
            log.error("retrain_not_started", error=str(exc))
            return
        finally:
            self._retrain_proc = None
        log.info("retrain_finished", exit_code=code, seconds=round(time.monotonic() - t0, 1))

    def _wait_retrain(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        """The child's exit code; past ``timeout`` it is stopped, so a hung retrain cannot block
        every later one (the job has max_instances=1)."""
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("retrain_timeout", seconds=timeout, action="stopping the retrain child")
            proc.terminate()
            try:
                return proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()

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

    def install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded (tests): the owner calls request_stop()

        def stop(signum: int, _frame: Any) -> None:
            log.info(
                "signal", signal=signal.Signals(signum).name, action="stop after the running tick"
            )
            self._stop.set()
            self._wakeup.set()

        def reload(_signum: int, _frame: Any) -> None:
            log.info("signal", signal="SIGHUP", action="reload configuration")
            self.request_reload()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def _do_reload(self) -> None:
        """Re-read the configuration; any failure keeps the old one running (``reload_failed``)."""
        if self.reload_settings is None:
            log.warning("reload_ignored", reason="no configuration source")
            return
        from chartrl.daemon.checks import check_daemon_settings

        try:
            new = self.reload_settings()
            check_daemon_settings(new)
            if new.data_dir != self.settings.data_dir:
                raise ConfigError(
                    f"data.dir changed to {new.data_dir}: the daemon holds {self.settings.data_dir} "
                    "(and its lock); restart it to move"
                )
        except Exception as exc:  # noqa: BLE001 - a broken edit must not stop a running daemon
            self._reload_failed(exc)
            return
        with self._lock:
            try:
                ticker = self.ticker_factory(new)
            except Exception as exc:  # noqa: BLE001 - same: the old ticker trades on
                self._reload_failed(exc)
                return
            old_settings, old_ticker = self.settings, self.ticker
            self.ticker, self.settings = ticker, new
        try:
            self._schedule()
        except Exception as exc:  # noqa: BLE001 - put the old configuration back, jobs included
            with self._lock:
                self.ticker, self.settings = old_ticker, old_settings
            ticker.close()
            self._schedule()
            self._reload_failed(exc)
            return
        old_ticker.close()
        log.info(
            "reloaded",
            mode=new.trading.mode,
            symbols=new.market.all_symbols,
            timeframe=new.market.timeframe,
        )
        self._write_state()
        if self.on_reload is not None:
            try:
                self.on_reload(new)
            except Exception as exc:  # noqa: BLE001 - a side service must not stop the daemon
                log.error("reload_hook_failed", error=f"{type(exc).__name__}: {exc}")

    def _reload_failed(self, exc: BaseException) -> None:
        msg = str(exc) if isinstance(exc, ChartrlError) else f"{type(exc).__name__}: {exc}"
        log.error("reload_failed", error=msg, kept="previous configuration")

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
        # mismatch, unknown order) is recorded and the daemon runs on holding (see tick.py).
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

    def request_stop(self) -> None:
        self._stop.set()
        self._wakeup.set()

    def request_reload(self) -> None:
        """What SIGHUP does: re-read the configuration at the next heartbeat."""
        self._reload.set()
        self._wakeup.set()

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
