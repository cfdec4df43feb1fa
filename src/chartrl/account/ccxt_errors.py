"""ccxt exceptions mapped to what the operator must do: retry later, or stop and act.

ccxt's hierarchy (``ccxt/base/errors.py``) decides the order of the checks below:

- ``NetworkError`` (under ``OperationFailed``) covers ``RequestTimeout``, ``ExchangeNotAvailable``
  (and ``OnMaintenance``), ``RateLimitExceeded``, ``DDoSProtection`` and ``InvalidNonce``: all
  temporary. ``BadResponse`` (a garbled body) is temporary too.
- ``InsufficientFunds`` is a direct ``ExchangeError``, *not* an ``InvalidOrder``; ``PermissionDenied``
  and ``AccountSuspended`` are ``AuthenticationError`` subclasses; ``BadSymbol`` is a ``BadRequest``;
  ``OrderNotFound`` *is* an ``InvalidOrder`` but is an answer, not a failure, when we look an order
  up, so :func:`is_not_found` is checked before anything maps it.
- Any other ``ExchangeError`` is the exchange refusing us for a reason we do not understand: stop.

For an order *submission*, a temporary error is also **ambiguous**: the request may have been
processed before the connection broke. :func:`is_ambiguous` says so, and the caller must then look
the order up by its client id instead of sending it again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from chartrl.errors import ChartrlError, OperationalError, TemporaryError

T = TypeVar("T")


def _ccxt() -> Any:
    import ccxt

    return ccxt


def is_not_found(exc: BaseException) -> bool:
    """The exchange answered that the order does not exist (an answer, not a failure)."""
    return isinstance(exc, _ccxt().OrderNotFound)


def is_insufficient_funds(exc: BaseException) -> bool:
    return isinstance(exc, _ccxt().InsufficientFunds)


def is_temporary(exc: BaseException) -> bool:
    ccxt = _ccxt()
    return isinstance(
        exc, (ccxt.NetworkError, ccxt.BadResponse, ccxt.RequestTimeout)
    ) or isinstance(exc, (TimeoutError, ConnectionError))


def is_ambiguous(exc: BaseException) -> bool:
    """After this error on a submission, the order may or may not exist on the exchange."""
    ccxt = _ccxt()
    # A 429/418 is refused before the matching engine sees it, but a proxy can produce one after the
    # fact; treating it as ambiguous costs one lookup, treating it as certain could double an order.
    return is_temporary(exc) or isinstance(exc, ccxt.OperationFailed)


def _operational_hint(exc: BaseException) -> str:
    ccxt = _ccxt()
    # Most specific first: several of these are subclasses of each other.
    if isinstance(exc, ccxt.AccountSuspended):
        return "the exchange account is suspended; contact the exchange"
    if isinstance(exc, ccxt.PermissionDenied):
        return "the API key lacks a permission (spot trading enabled? IP whitelist?)"
    if isinstance(exc, ccxt.AuthenticationError):
        return (
            "the exchange rejected the API key/secret; check CHARTRL__EXCHANGE__API_KEY/API_SECRET"
        )
    if isinstance(exc, ccxt.InsufficientFunds):
        return "insufficient funds on the exchange; check balances, then `chartrl halt clear`"
    if isinstance(exc, ccxt.BadSymbol):
        return "the exchange does not know this symbol; check market.symbol"
    if isinstance(exc, ccxt.InvalidOrder):
        return "the exchange refused the order (precision, minimum size?); check market limits"
    return "the exchange refused the request"


def translate(exc: BaseException, what: str) -> ChartrlError:
    """The chartrl error for a ccxt (or socket) exception raised while doing ``what``."""
    if isinstance(exc, ChartrlError):
        return exc
    # Query strings carry timestamps and signatures: never worth keeping in a message or the ledger.
    detail = f"{type(exc).__name__}: {re.sub(r'[?][^ ]*', '?...', str(exc))[:200]}"
    if is_temporary(exc) or isinstance(exc, _ccxt().OperationFailed):
        return TemporaryError(f"{what}: {detail}; will retry")
    return OperationalError(f"{what}: {detail}; {_operational_hint(exc)}")


def call(fn: Callable[..., T], *args: Any, what: str, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with ccxt exceptions translated (no retry: the caller decides)."""
    ccxt = _ccxt()
    try:
        return fn(*args, **kwargs)
    except (ccxt.BaseError, TimeoutError, ConnectionError) as exc:
        raise translate(exc, what) from exc
