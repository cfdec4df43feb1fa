"""How the daemon answers signals: SIGTERM/SIGINT stop it, SIGHUP reloads the configuration.

A stop lets the running tick finish; a reload is done at the next heartbeat, and any failure of it
(a broken edit, a ticker that cannot be built, jobs that cannot be scheduled) keeps the previous
configuration running. An embedded daemon (not in the main thread: tests, the console) installs no
handlers; its owner calls :meth:`ServiceSignals.request_stop` and
:meth:`ServiceSignals.request_reload`. A mixin of :class:`chartrl.daemon.service.Daemon` (needs
``settings``, ``ticker``, ``ticker_factory``, ``reload_settings``, ``on_reload``, ``_stop``,
``_reload``, ``_wakeup``, ``_lock``, ``_schedule`` and ``_write_state``).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from chartrl.errors import ChartrlError, ConfigError
from chartrl.logs import get_logger

log = get_logger("chartrl.daemon")


class ServiceSignals:
    """Stop and reload; see the module docstring."""

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

    def request_stop(self) -> None:
        self._stop.set()
        self._wakeup.set()

    def request_reload(self) -> None:
        """What SIGHUP does: re-read the configuration at the next heartbeat."""
        self._reload.set()
        self._wakeup.set()
