"""Live account: real market orders through ccxt, every step written to the ledger first.

The order protocol (invariant 4 of ARCHITECTURE.md):

1. Size the order from fresh balances, round it to the market's amount precision, check the
   minimum amount / notional and the free balance. Nothing to send: return None.
2. Create a client order id and record the order as ``pending`` (committed) *before* sending.
3. Send it with that client id. The answer and its fills are recorded in one transaction.
4. A timeout, 5xx or connection reset leaves the order *in flight* (``unknown``): it is looked up
   by its client id, never sent again. An order the exchange does not know is declared
   ``rejected`` (never arrived) only ``trading.order_lookup_grace_seconds`` after it was recorded,
   past the request's recvWindow, so a delayed request cannot arrive after we gave up on it.
5. While any order is not final, no new order is sent; :meth:`LiveAccount.reconcile` runs first.

On :meth:`start` every unfinished order is reconciled, then the exchange's balances are compared
with the ledger's (baseline + every recorded fill). A difference beyond one fee halts trading
(``halts`` table, :class:`TradingHalted`) until the operator runs ``chartrl halt clear``, which also
re-baselines. After any halt the next :meth:`execute` runs :meth:`start` again first, so trading
resumes only once everything has been reconciled anew.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from chartrl.account import ccxt_errors
from chartrl.account.base import Account, Candle
from chartrl.account.fills import Fill
from chartrl.account.ledger import Ledger
from chartrl.account.ledger_orders import OrderRow
from chartrl.account.live_books import (
    BalanceCheck,
    compare_balances,
    entry_price,
    expected_balances,
)
from chartrl.account.live_reconcile import CLIENT_ID_PREFIX, MODE, Reconciler
from chartrl.account.live_sizing import Sizing
from chartrl.config.settings import Settings
from chartrl.errors import ConfigError, OperationalError, TemporaryError, TradingHalted, UsageError
from chartrl.logs import get_logger
from chartrl.symbols import base_quote

__all__ = ["CLIENT_ID_PREFIX", "MODE", "LiveAccount", "new_client_order_id", "require_live"]
BASELINE_FILL_ROWID = "live.baseline_fill_rowid"
BUDGET = "live.max_quote:"
"""+ symbol: the quote budget fixed at the first live start (when trading.max_quote is empty)."""
BUDGET_FILL_ROWID = "live.budget_fill_rowid:"
"""+ symbol: the last fill the budget already includes; later fills add to it or spend it."""


class OrdersUnresolved(TemporaryError):
    """An order the exchange has not confirmed yet: trading waits for it (and the daemon runs on)."""


def require_live(settings: Settings, live: bool) -> None:
    """Refuse live trading unless the config says live AND the caller passed --live; and keys are set."""
    if settings.trading.mode != "live":
        raise UsageError(
            f'live trading needs [trading] mode = "live" in the config (it is {settings.trading.mode!r}) and --live'
        )
    if not live:
        raise UsageError(
            'trading.mode is "live" but --live was not given; pass --live to place real orders'
        )
    missing = [
        f"exchange.{name} (set CHARTRL__EXCHANGE__{name.upper()} or exchange.key_file)"
        for name in ("api_key", "api_secret")
        if getattr(settings.exchange, name) is None
        or not getattr(settings.exchange, name).get_secret_value()
    ]
    if missing:
        raise ConfigError([f"{m} is missing: live trading needs it" for m in missing])


def new_client_order_id() -> str:
    # Binance accepts ^[.A-Z:/a-z0-9_-]{1,36}$; 32 characters, unique without coordination.
    return CLIENT_ID_PREFIX + uuid.uuid4().hex[:28]


class LiveAccount(Reconciler, Sizing, Account):
    """Market orders on a ccxt exchange for one symbol, long-only spot, all recorded in the ledger."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        *,
        live: bool = False,
        exchange: Any = None,
        on_point: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        require_live(settings, live)
        from chartrl.market.exchange import make_exchange

        self.settings = settings
        self.ledger = ledger
        self.symbol = settings.market.symbol
        self.base, self.quote = base_quote(self.symbol)
        self.exchange = exchange if exchange is not None else make_exchange(settings.exchange)
        self.on_point = on_point or (lambda _name: None)
        self.sleep = sleep
        self.grace_ms = int(settings.trading.order_lookup_grace_seconds * 1000)
        self.lost_deadline_ms = int(settings.trading.order_lost_deadline_seconds * 1000)
        self.cancel_after_ms = int(settings.trading.cancel_after_seconds * 1000)
        self._lookups: dict[str, tuple[float, float]] = {}
        """Lost orders: client id -> (monotonic time of the next look-up, current backoff)."""
        self.log = get_logger("chartrl.live", symbol=self.symbol, exchange=settings.exchange.id)
        self.market: dict[str, Any] = {}
        self.fee_rate = settings.trading.fee or 0.0
        self.total: dict[str, float] = {}
        self.free: dict[str, float] = {}
        self.own: dict[str, float] = {}
        """The bot's own book: base its fills bought (less sold), quote left of its budget."""
        self.last_price: float | None = None
        self.started = False
        """start() completed without a halt since the last halt: orders may be sent."""

    # -- exchange calls ---------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return ccxt_errors.call(fn, *args, what=what, **kwargs)

    def start(self) -> None:
        """Load markets, reconcile every unfinished order, compare balances.

        Raises :class:`TradingHalted` (recorded in the ledger) on a balance mismatch or an open
        order the ledger does not know; the account stays usable for marking and holding.
        """
        self.started = False
        self._call("load markets", self.exchange.load_markets)
        if self.symbol not in self.exchange.markets:
            raise OperationalError(
                f"{self.settings.exchange.id} has no market {self.symbol}; check market.symbol"
            )
        self.market = self.exchange.market(self.symbol)
        if self.settings.trading.fee is None:
            self.fee_rate = float(self.market.get("taker") or 0.0)
        pending = self.reconcile(wait=True)
        # Balances and a price first: even a start that halts below leaves the account able to
        # report its equity (status line, risk checks) while it holds.
        self.refresh_balances()
        self._fix_budget()
        ticker = self._call("fetch ticker", self.exchange.fetch_ticker, self.symbol)
        price = ticker.get("last") or ticker.get("close")
        self.last_price = float(price) if price else self.last_price
        if pending:
            # No balance check (an order in flight explains a difference) and no new order: every
            # later execute() starts again, looking the orders up until they resolve.
            raise OrdersUnresolved(
                f"orders {', '.join(o.client_order_id for o in pending)} are still unresolved; "
                "looking them up again, no new order until then"
            )
        self.check_open_orders()
        self.check_balances()
        self.started = True
        self.log.info(
            "live_account_started",
            balances={self.base: self.total.get(self.base), self.quote: self.total.get(self.quote)},
            price=self.last_price,
        )

    def refresh_balances(self) -> None:
        bal = self._call("fetch balance", self.exchange.fetch_balance)
        self.total = {k: float(v or 0.0) for k, v in (bal.get("total") or {}).items()}
        self.free = {k: float(v or 0.0) for k, v in (bal.get("free") or {}).items()}
        self.own = self._own_book()

    # -- the bot's own position (invariant 8) -------------------------------------------------------
    def _fix_budget(self) -> None:
        """On the first live start, fix the quote budget: trading.max_quote, else the quote balance."""
        if self.ledger.get_flag(BUDGET + self.symbol) is not None:
            return
        budget = self.settings.trading.max_quote or self.total.get(self.quote, 0.0)
        with self.ledger.transaction():
            self.ledger.set_flag(BUDGET + self.symbol, repr(float(budget)))
            self.ledger.set_flag(
                BUDGET_FILL_ROWID + self.symbol, str(self.ledger.last_fill_rowid())
            )
        self.log.info(
            "quote_budget",
            budget=budget,
            source="trading.max_quote"
            if self.settings.trading.max_quote
            else "quote balance at first start",
        )
        self.own = self._own_book()

    def _own_book(self) -> dict[str, float]:
        """What the bot may trade: the base its own fills hold and the quote left of its budget,
        each capped by what the exchange holds. Everything else on the account is external."""
        fills = self.ledger.fills(MODE, self.symbol)
        position = expected_balances({}, fills, self.base, self.quote)[self.base]
        flag = self.ledger.get_flag(BUDGET + self.symbol)
        budget = self.settings.trading.max_quote or (float(flag) if flag is not None else 0.0)
        since = int(self.ledger.get_flag(BUDGET_FILL_ROWID + self.symbol) or 0)
        later = self.ledger.fills_after_rowid(MODE, self.symbol, since)
        cash = expected_balances({self.quote: budget}, later, self.base, self.quote)[self.quote]
        return {
            self.base: max(0.0, min(position, self.total.get(self.base, 0.0))),
            self.quote: max(0.0, min(cash, self.total.get(self.quote, 0.0))),
        }

    def external(self) -> dict[str, float]:
        """Holdings on the exchange account that are not the bot's (never traded by it)."""
        return {
            c: max(0.0, self.total.get(c, 0.0) - self.own.get(c, 0.0))
            for c in (self.base, self.quote)
        }

    # -- balances -----------------------------------------------------------------------------------
    def check_balances(self) -> BalanceCheck:
        """Compare exchange balances with baseline + recorded fills; halt on a mismatch beyond the fees."""
        rebase = self.ledger.get_flag("live.rebaseline") is not None
        baseline = self.ledger.latest_balances(MODE, "baseline")
        if rebase:
            # `halt clear` of a mismatch: first the fills of orders we had given up on, so the new
            # baseline does not swallow them (the position would be missing what they bought).
            self.recover_orders()
            self.refresh_balances()
        if baseline is None or rebase:
            # The baseline covers every fill recorded so far; later fills are added to it.
            data = {c: self.total.get(c, 0.0) for c in (self.base, self.quote)}
            # Its value now, so "equity vs start" compares with what it was worth, not with the
            # same amounts revalued at a later price.
            value = self.equity() if self.last_price else None
            with self.ledger.transaction():
                self.ledger.record_balances(
                    MODE, "baseline", data, symbol=self.symbol, equity=value
                )
                self.ledger.set_flag(BASELINE_FILL_ROWID, str(self.ledger.last_fill_rowid()))
                self.ledger.set_flag("live.rebaseline", None)
            self.log.info("balance_baseline", balances=data, rebaseline=rebase)
            baseline = self.ledger.latest_balances(MODE, "baseline")
        assert baseline is not None
        fills = self.ledger.fills_after_rowid(
            MODE, self.symbol, int(self.ledger.get_flag(BASELINE_FILL_ROWID) or 0)
        )
        check = compare_balances(
            baseline[1], fills, self.total, self.base, self.quote, self.fee_rate
        )
        self.snapshot()
        if not check.ok:
            self._halt("balance_mismatch", check.describe())
        return check

    def snapshot(self) -> None:
        """Record the exchange's balances and the bot's own book (what ``chartrl status`` shows)."""
        equity = self.equity() if self.last_price else None
        with self.ledger.transaction():
            self.ledger.record_balances(
                MODE,
                "exchange",
                {c: self.total.get(c, 0.0) for c in (self.base, self.quote)},
                symbol=self.symbol,
                equity=equity,
            )
            self.ledger.record_balances(
                MODE, "own", dict(self.own), symbol=self.symbol, equity=equity
            )

    def _halt(self, reason: str, details: str) -> None:
        self.started = (
            False  # after `chartrl halt clear`, reconcile everything again before trading
        )
        if not any(h.reason == reason for h in self.ledger.active_halts()):
            self.ledger.set_halt(reason, MODE, details)
        self.log.error("trading_halted", reason=reason, details=details)
        raise TradingHalted(
            f"trading halted ({reason}): {details}; fix it, then run `chartrl halt clear`"
        )

    # -- orders ---------------------------------------------------------------------------------------
    def execute(
        self,
        action: int,
        candle: Candle,
        *,
        max_notional: float | None = None,
        decision_id: int | None = None,
    ) -> Fill | None:
        """Send a market order for ``action`` (priced for sizing at ``candle.open``); the fill, or None.

        An operational error on the way (rejected keys, a balance that cannot be read) records a
        halt with its reason before it is raised, as every other reason to stop trading does."""
        try:
            return self._execute(action, candle, max_notional, decision_id)
        except TradingHalted:
            raise
        except OperationalError as exc:
            self._halt("operational_error", str(exc))
            raise  # unreachable: _halt raises

    def _execute(
        self, action: int, candle: Candle, max_notional: float | None, decision_id: int | None
    ) -> Fill | None:
        if not self.started:
            self.start()  # first use, or the account halted since: reconcile everything first
        if self.reconcile():
            raise TemporaryError(
                "an earlier order is still unresolved; no new order until it is (will retry)"
            )
        self.refresh_balances()
        self.check_balances()
        self.last_price = float(candle.open)
        sized = self._size(int(action), float(candle.open), max_notional)
        if sized is None:
            return None
        side, amount, cost = sized
        cid = new_client_order_id()
        self.ledger.create_order(
            cid, symbol=self.symbol, mode=MODE, side=side, amount=amount, decision_id=decision_id
        )
        self.log.info("order_recorded", client_order_id=cid, side=side, amount=amount)
        self.on_point("order_recorded")
        try:
            # ccxt's unified clientOrderId (newClientOrderId on Binance).
            if cost is not None:
                remote = self.exchange.create_market_buy_order_with_cost(
                    self.symbol, cost, {"clientOrderId": cid}
                )
            else:
                remote = self.exchange.create_order(
                    self.symbol, "market", side, amount, None, {"clientOrderId": cid}
                )
        except Exception as exc:  # noqa: BLE001 - mapped below
            err = ccxt_errors.translate(exc, f"send order {cid}")
            if ccxt_errors.is_ambiguous(exc):
                self.ledger.update_order(cid, state="unknown", error=str(err)[:300])
                self.log.warning("order_ambiguous", client_order_id=cid, error=str(err))
                order = self._resolve(self.ledger.order(cid))  # type: ignore[arg-type]
                if order.state in ("pending", "unknown"):
                    raise TemporaryError(
                        f"order {cid} outcome unknown; it will be looked up, never re-sent"
                    ) from exc
            else:
                self.ledger.update_order(cid, state="rejected", error=str(err)[:300])
                if side == "buy" and ccxt_errors.is_insufficient_funds(exc):
                    # The price moved past our headroom: nothing was bought. Not a reason to stop
                    # trading; the next decision sizes from fresh balances.
                    self.log.warning(
                        "order_refused",
                        client_order_id=cid,
                        reason="insufficient_funds",
                        error=str(err),
                    )
                    return None
                if isinstance(err, OperationalError):
                    self._halt("operational_error", str(err))
                raise err from exc
        else:
            self.on_point("order_sent")
            order = self._apply(self.ledger.order(cid), remote)  # type: ignore[arg-type]
            self.on_point("order_applied")
        order = self._settle(order)
        self.refresh_balances()
        self.last_price = order.average or candle.open
        self.snapshot()  # status shows the balances after this order, not before it
        return self._as_fill(order, candle)

    def _as_fill(self, order: OrderRow, candle: Candle) -> Fill | None:
        fills = self.ledger.fills(client_order_id=order.client_order_id)
        if not fills:
            return None
        amount = sum(f.amount for f in fills)
        cost = sum(f.cost for f in fills)
        price = cost / amount
        fee = sum(
            f.fee * (price if f.fee_currency == self.base else 1.0)
            for f in fills
            if f.fee_currency in (self.base, self.quote)
        )
        return Fill(candle.timestamp, order.side, price, amount, fee)

    # -- Account interface ----------------------------------------------------------------------------
    @property
    def cash(self) -> float:
        return self.own.get(self.quote, 0.0)

    @property
    def position(self) -> float:
        return self.own.get(self.base, 0.0)

    def equity(self, price: float | None = None) -> float:
        p = price if price is not None else self.last_price
        return self.cash + (self.position * p if p else 0.0)

    def position_features(self, price: float | None = None) -> tuple[float, float]:
        import math

        p = price if price is not None else self.last_price
        entry = entry_price(self.ledger.fills(MODE, self.symbol), self.base, self.quote)
        if not p or entry <= 0 or self._tradable_position(p) <= 0:
            return 0.0, 0.0
        return 1.0, math.log(p / entry)
