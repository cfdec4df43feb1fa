"""How a tick's decision reaches the market: the account it executes through, the fill candle.

The paper account fills at the open of candle t+1 under the exchange's market rules (the backtest
fill model fed live candles); the live account is started (unfinished orders reconciled, balances
compared) before the first tick. Every tick executes, HOLD too. A mixin of
:class:`chartrl.daemon.tick.Ticker` (needs ``settings``, ``exchange``, ``ledger``, ``account``,
``clock``, ``symbol``, ``timeframe``, ``mode`` and ``log``).
"""

from __future__ import annotations

from typing import Any

from chartrl.account.base import Candle
from chartrl.account.fills import MarketRules
from chartrl.errors import TradingHalted
from chartrl.strategies.base import Action
from chartrl.timeframe import candle_close_ms


class TickOrders:
    """The account and the execution of a decision; see the module docstring."""

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
