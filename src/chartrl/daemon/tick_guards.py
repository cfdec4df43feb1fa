"""What a tick checks before it trusts the exchange: its clock, its market list, its prices.

A mixin of :class:`chartrl.daemon.tick.Ticker` (needs ``settings``, ``exchange``, ``store``,
``clock``, ``symbol``, ``timeframe``, ``log`` and ``close``), kept apart so the tick itself reads
top to bottom.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from chartrl.config.settings import Settings
from chartrl.errors import DataError, UsageError
from chartrl.timeframe import timeframe_seconds


def exchange_settings(settings: Settings) -> Any:
    """The exchange settings a tick connects with: paper never sends API keys, whatever is set."""
    if settings.trading.mode == "paper":
        return settings.exchange.model_copy(update={"api_key": None, "api_secret": None})
    return settings.exchange


class TickGuards:
    """The checks; see the module docstring."""

    def _screen(self, last: Any) -> Any:
        """The price screen of this fetch: against the close of the newest stored candle."""
        from chartrl.daemon.sanity import Screen

        reference = None
        if last is not None:
            try:
                # The re-fetched newest candle is judged against the one before it.
                span = pd.Timedelta(seconds=10 * timeframe_seconds(self.timeframe))
                recent = self.store.load(
                    self.settings.exchange.id,
                    self.symbol,
                    self.timeframe,
                    start=last - span,
                    end=last,
                )
                reference = float(recent["close"].iloc[-2 if len(recent) > 1 else -1])
            except DataError:
                reference = None
        return Screen(reference, self.settings.data.price_band)

    def _exchange_now(self, local: int) -> int:
        """The exchange's time (ccxt fetch_time) when it serves one, else ours; logs the offset."""
        if not self.exchange.has.get("fetchTime"):
            return local
        try:
            now = int(self.exchange.fetch_time())
        except Exception as exc:  # noqa: BLE001 - unreachable now: the fetch below reports it
            self.log.debug("exchange_time_unavailable", error=str(exc)[:200])
            return local
        if abs(now - local) > 1000:
            self.log.warning("clock_offset", offset_ms=now - local, using="the exchange's clock")
        return now

    def _max_skew_ms(self) -> float:
        # An accelerated clock (demo, soak) magnifies the wall-clock jitter by its speed.
        speed = getattr(self.clock, "speed", None) or 1.0
        return self.settings.daemon.max_clock_skew_seconds * 1000 * max(1.0, float(speed))

    def _check_market(self) -> None:
        """Every mode: a market the exchange lists without our symbol fails the start (exit 2)
        instead of every tick. An unreachable exchange is not a verdict: the first tick checks."""
        import difflib

        markets = getattr(self.exchange, "markets", None)
        if isinstance(markets, dict) and markets and self.symbol not in markets:
            self.close()
            close = difflib.get_close_matches(self.symbol, list(markets), n=5, cutoff=0.5)
            hint = f"close matches: {', '.join(close)}" if close else "see the exchange's markets"
            raise UsageError(
                f"{self.settings.exchange.id} has no market {self.symbol!r}; check market.symbol "
                f"(--symbol); {hint}"
            )
