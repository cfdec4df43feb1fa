"""ccxt exchange factory: any exchange id, rate limiting on, REST hosts optionally redirected.

``api_url`` replaces scheme and host of every REST endpoint the exchange knows and keeps the path,
which is how the loopback emulator (or any proxy) is reached by an unmodified ccxt class.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from chartrl.config.settings import ExchangeSettings
from chartrl.errors import UsageError


def _redirect(urls: Any, base: str) -> Any:
    if isinstance(urls, dict):
        return {k: _redirect(v, base) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith(("http://", "https://")):
        b = urlsplit(base)
        u = urlsplit(urls)
        return urlunsplit((b.scheme, b.netloc, (b.path.rstrip("/") + u.path) if b.path else u.path, u.query, u.fragment))
    return urls


def make_exchange(cfg: ExchangeSettings, **options: Any) -> Any:
    """A configured ccxt exchange instance (synchronous API)."""
    import ccxt

    cls = getattr(ccxt, cfg.id, None)
    if cls is None:
        raise UsageError(f"exchange {cfg.id!r} is not a ccxt exchange id")
    params: dict[str, Any] = {"enableRateLimit": True, "timeout": cfg.timeout_ms, "options": dict(options)}
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
        exchange.rateLimit = min(exchange.rateLimit, 5)  # loopback: no need to pace like the real API
    return exchange
