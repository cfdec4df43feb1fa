"""The ticks of every configured symbol (``market.symbols``), each kept apart from the others.

One :class:`~chartrl.daemon.tick.Ticker` per symbol, built from the settings narrowed to it
(:meth:`Settings.for_symbol`): its own paper book, recurrent state, risk limits and halts. They
share the ledger (one file, one connection) and the exchange connection (one market list).

A symbol that cannot start (delisted, an exchange error for it alone) does not stop the others:
it is logged (``symbol_start_failed``, naming it), and built again when its next tick comes.
Only when no symbol starts does the start fail, with the first symbol's error (exit 2 for a bad
setting; a temporary error is retried by the daemon's start-up).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chartrl.account.ledger import Ledger
from chartrl.config.settings import Settings
from chartrl.errors import ChartrlError, TemporaryError
from chartrl.logs import get_logger

log = get_logger("chartrl.daemon")

TickerBuilder = Callable[..., Any]
"""``builder(settings_of_one_symbol, ledger=..., exchange=...)`` -> a Ticker."""


class SymbolTickers:
    """What the daemon ticks: :meth:`get` gives one symbol's ticker (building it if it could not
    start before); a failure of that build is raised to the tick job that asked."""

    def __init__(
        self,
        settings: Settings,
        *,
        builder: TickerBuilder | None = None,
        live: bool = False,
        ledger: Ledger | None = None,
        exchange: Any = None,
    ) -> None:
        from chartrl.daemon.tick import Ticker
        from chartrl.daemon.tick_guards import exchange_settings
        from chartrl.market.exchange import make_exchange

        self.settings = settings
        self.symbols = settings.market.all_symbols
        self._build = builder or (lambda s, **kw: Ticker(s, live=live, **kw))
        self._own_ledger = ledger is None
        self.ledger = ledger or Ledger.for_data_dir(settings.data_dir)
        try:
            self.exchange = exchange or make_exchange(exchange_settings(settings))
        except BaseException:
            self.close()
            raise
        self.tickers: dict[str, Any] = {}
        self.start_errors: dict[str, str] = {}
        """Symbols that could not start, with the reason (status shows them as failing)."""
        first: BaseException | None = None
        temporary: BaseException | None = None
        for symbol in self.symbols:
            try:
                self.tickers[symbol] = self._make(symbol)
            except Exception as exc:  # noqa: BLE001 - one symbol's failure must not stop the others
                first = first or exc
                if isinstance(exc, TemporaryError):
                    temporary = temporary or exc
                self._failed(symbol, exc)
        if not self.tickers:
            self.close()
            # Waiting may cure a temporary failure; otherwise the first error says what to fix.
            raise temporary or first  # type: ignore[misc]

    def _make(self, symbol: str) -> Any:
        return self._build(
            self.settings.for_symbol(symbol), ledger=self.ledger, exchange=self.exchange
        )

    def _failed(self, symbol: str, exc: BaseException) -> None:
        msg = str(exc) if isinstance(exc, ChartrlError) else f"{type(exc).__name__}: {exc}"
        self.start_errors[symbol] = msg[:500]
        log.error("symbol_start_failed", symbol=symbol, error=msg[:500], others="trade on")

    def get(self, symbol: str) -> Any:
        """The ticker of ``symbol``; one that could not start is built again now (raising why not)."""
        ticker = self.tickers.get(symbol)
        if ticker is not None:
            return ticker
        try:
            ticker = self._make(symbol)
        except Exception as exc:
            self._failed(symbol, exc)
            raise
        self.tickers[symbol] = ticker
        self.start_errors.pop(symbol, None)
        log.info("symbol_started", symbol=symbol, after="a failed start")
        return ticker

    def status_text(self) -> str:
        """systemd's one STATUS= line: every symbol's, joined."""
        parts = [self.tickers[s].status_text() for s in self.symbols if s in self.tickers]
        parts += [f"{s} NOT STARTED: {e[:80]}" for s, e in self.start_errors.items()]
        return " || ".join(parts)

    def close(self) -> None:
        for ticker in getattr(self, "tickers", {}).values():
            ticker.close()
        if self._own_ledger:
            self.ledger.close()


class SymbolHealth:
    """Each symbol's health as its tick jobs end, for daemon.json and ``chartrl status``: state
    ok | missed (the tick ran, its candle was not tradeable) | failing (an error), the error,
    the consecutive failures and when it was last ok."""

    def __init__(self) -> None:
        self._by_symbol: dict[str, dict[str, Any]] = {}

    def record(self, symbol: str, state: str, error: str | None = None) -> None:
        h = self._by_symbol.setdefault(symbol, {"failures": 0})
        now = datetime.now(UTC).isoformat(timespec="seconds")
        h.update(state=state, error=error, at=now)
        h["failures"] = h["failures"] + 1 if state == "failing" else 0
        if state != "failing":
            h["last_ok"] = now

    def snapshot(
        self, symbols: list[str], start_errors: dict[str, str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Every configured symbol's; one that could not start is failing from the start."""
        for symbol, error in (start_errors or {}).items():
            if self._by_symbol.get(symbol, {}).get("state") != "failing":
                self.record(symbol, "failing", error)
        return {s: dict(self._by_symbol.get(s) or {"state": "waiting"}) for s in symbols}


def ticker_factory(live: bool = False) -> Callable[[Settings], SymbolTickers]:
    """The daemon's ticker factory (system clock, the configured exchange, every symbol)."""
    return lambda settings: SymbolTickers(settings, live=live)
