"""ccxt exchange factory (any exchange id, rate limiting on, REST hosts optionally redirected) and
the retry policy every exchange call goes through.

``api_url`` replaces scheme and host of every REST endpoint the exchange knows and keeps the path,
which is how the loopback emulator (or any proxy) is reached by an unmodified ccxt class.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from chartrl.config.settings import ExchangeSettings
from chartrl.errors import OperationalError, TemporaryError, UsageError
from chartrl.logs import get_logger
from chartrl.logs import one_line_error as short_error  # ccxt puts whole responses in messages

T = TypeVar("T")


class ExchangeRefusedError(TemporaryError):
    """The exchange answered a request with an error that is neither a network fault nor our mistake."""


_log = get_logger("chartrl.market.exchange")


def _redirect(urls: Any, base: str) -> Any:
    if isinstance(urls, dict):
        return {k: _redirect(v, base) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith(("http://", "https://")):
        b = urlsplit(base)
        u = urlsplit(urls)
        return urlunsplit(
            (
                b.scheme,
                b.netloc,
                (b.path.rstrip("/") + u.path) if b.path else u.path,
                u.query,
                u.fragment,
            )
        )
    return urls


def make_exchange(cfg: ExchangeSettings, **options: Any) -> Any:
    """A configured ccxt exchange instance (synchronous API)."""
    import ccxt

    cls = getattr(ccxt, cfg.id, None)
    if cls is None:
        raise UsageError(f"exchange {cfg.id!r} is not a ccxt exchange id")
    params: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": cfg.timeout_ms,
        "options": dict(options),
    }
    if cfg.recv_window_ms is not None:
        params["options"]["recvWindow"] = cfg.recv_window_ms
    if cfg.api_key is not None:
        params["apiKey"] = cfg.api_key.get_secret_value()
    if cfg.api_secret is not None:
        params["secret"] = cfg.api_secret.get_secret_value()
    if cfg.id in ("binance", "binanceus"):
        # Spot only: do not also load futures/options markets from hosts we will never trade on.
        params["options"].setdefault("defaultType", "spot")
        params["options"].setdefault("fetchMarkets", {"types": ["spot"]})
        params["options"].setdefault("fetchCurrencies", False)
    exchange = cls(params)
    if cfg.api_url:
        exchange.urls["api"] = _redirect(exchange.urls["api"], cfg.api_url)
        exchange.rateLimit = min(
            exchange.rateLimit, 5
        )  # loopback: no need to pace like the real API
    return exchange


def call_with_retry(
    fn: Callable[..., T],
    *args: Any,
    max_retries: int = 5,
    base_delay: float = 1.0,
    what: str = "exchange request",
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> T:
    """Call a ccxt method, retrying temporary failures with exponential backoff and jitter.

    Retried: NetworkError and its kin (RequestTimeout, ExchangeNotAvailable, DDoSProtection and
    RateLimitExceeded, caught by name because their hierarchy has changed between ccxt versions),
    and BadResponse/NullResponse (an unparseable or empty body, e.g. a proxy's HTML error page:
    OperationFailed in ccxt 4.5, neither a NetworkError nor an ExchangeError).
    Never retried: AuthenticationError (OperationalError: the operator must fix the key),
    BadSymbol and BadRequest (UsageError), any other ExchangeError (ExchangeRefusedError). After
    the last retry a TemporaryError says what failed.
    """
    import ccxt

    retryable = (
        ccxt.NetworkError,
        ccxt.RequestTimeout,
        ccxt.ExchangeNotAvailable,
        ccxt.RateLimitExceeded,
        ccxt.DDoSProtection,
        ccxt.BadResponse,
        ccxt.NullResponse,
    )
    for attempt in range(max_retries + 1):
        try:
            return fn(*args, **kwargs)
        except ccxt.AuthenticationError as exc:
            raise OperationalError(
                f"{what} was refused: {short_error(exc)}; check the API key and secret (CHARTRL__EXCHANGE__API_KEY/"
                "API_SECRET or exchange.key_file)"
            ) from None
        except ccxt.BadSymbol as exc:
            raise UsageError(
                f"{what}: unknown symbol ({short_error(exc)}); check --symbol / market.symbol"
            ) from None
        except retryable as exc:
            if attempt >= max_retries:
                raise TemporaryError(
                    f"{what} failed after {attempt + 1} attempts: {short_error(exc)}; the exchange may be down or "
                    "rate limiting, retry later"
                ) from None
            delay = base_delay * (2**attempt) * random.uniform(0.5, 1.5)
            if isinstance(exc, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
                # Binance bans an IP (HTTP 418) that keeps calling before its Retry-After.
                delay = max(delay, _retry_after(getattr(fn, "__self__", None)))
            _log.warning(
                "exchange_retry",
                what=what,
                attempt=attempt + 1,
                of=max_retries + 1,
                delay_s=round(delay, 3),
                error=short_error(exc),
            )
            sleep(delay)
        except (
            ccxt.BadRequest
        ) as exc:  # after BadSymbol: the request itself is wrong, a retry repeats it
            raise UsageError(
                f"{what} was refused as a bad request: {short_error(exc)}; check --symbol, --timeframe and the dates"
            ) from None
        except (
            ccxt.ExchangeError
        ) as exc:  # the exchange answered, with an error ccxt has no class for
            raise ExchangeRefusedError(
                f"{what} failed: {short_error(exc)}; retry later, or check the exchange's status page"
            ) from None
    raise AssertionError("unreachable")  # the loop either returns or raises


def _retry_after(exchange: Any, cap: float = 60.0) -> float:
    """Seconds the server asked us to wait (Retry-After of the last response), at most ``cap``."""
    headers = getattr(exchange, "last_response_headers", None) or {}
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    try:
        return min(max(float(value), 0.0), cap) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0
