"""The exchange's market info for one symbol (taker fee, amount precision, minimums), kept in the
data dir, and the fill rules built from it.

The paper and live accounts fill under the exchange's precision and limits; a backtest that
ignored them would round and refuse orders differently, and backtest and live would disagree on
a number. ``update_series`` (``chartrl fetch`` and every daemon tick) saves the market info it has
loaded, so a backtest of stored candles fills under the same rules offline.

Layout: ``<data dir>/markets/<exchange>/<BASE-QUOTE>.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chartrl.account.fills import TICK_SIZE, MarketRules, rules_from_market, rules_from_settings
from chartrl.atomic import atomic_write
from chartrl.config.settings import Settings
from chartrl.errors import ConfigError
from chartrl.logs import get_logger
from chartrl.market.series import safe_name

log = get_logger("chartrl.market.markets")

# What the fill rules read of a ccxt market structure; its raw ``info`` can be kilobytes.
_KEYS = ("symbol", "base", "quote", "taker", "maker", "precision", "limits")


@dataclass(frozen=True)
class MarketInfo:
    market: dict[str, Any]
    """The ccxt market structure, cut to ``_KEYS``."""
    precision_mode: int
    """The exchange's ccxt ``precisionMode`` (how ``precision.amount`` reads)."""
    saved_at: str = ""
    """When it was read from the exchange (ISO 8601, UTC)."""


def market_path(data_dir: Path | str, exchange_id: str, symbol: str) -> Path:
    return (
        Path(data_dir).expanduser()
        / "markets"
        / safe_name(exchange_id)
        / f"{safe_name(symbol)}.json"
    )


def save_market(
    data_dir: Path | str, exchange_id: str, symbol: str, market: dict[str, Any], precision_mode: int
) -> bool:
    """Store the market info unless the stored copy already says the same; True when written.

    Called at every tick, so an unchanged market costs one small read, not a write and an fsync.
    """
    info = MarketInfo({k: market.get(k) for k in _KEYS}, int(precision_mode))
    old = load_market(data_dir, exchange_id, symbol)
    if old is not None and (old.market, old.precision_mode) == (info.market, info.precision_mode):
        return False
    doc = {
        "exchange": exchange_id,
        "symbol": symbol,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "precision_mode": info.precision_mode,
        "market": info.market,
    }
    atomic_write(
        market_path(data_dir, exchange_id, symbol),
        lambda fh: fh.write(json.dumps(doc, indent=2).encode()),
    )
    return True


def load_market(data_dir: Path | str, exchange_id: str, symbol: str) -> MarketInfo | None:
    """The stored market info, or None when there is none (or it cannot be read: it is only a cache)."""
    path = market_path(data_dir, exchange_id, symbol)
    try:
        doc = json.loads(path.read_text())
        return MarketInfo(
            dict(doc["market"]), int(doc["precision_mode"]), str(doc.get("saved_at", ""))
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("market_info_unreadable", path=str(path), error=str(exc)[:200])
        return None


def _from_exchange(settings: Settings, exchange: Any = None) -> MarketInfo | None:
    """One attempt at the exchange's market info (stored on success); None when unreachable.

    ``exchange``: a ccxt instance already at hand (the daemon's); else one is made for the call.
    """
    from chartrl.market.exchange import make_exchange, short_error

    ex_id, symbol = settings.exchange.id, settings.market.symbol
    try:
        if exchange is None:
            exchange = make_exchange(settings.exchange)
        exchange.load_markets()
        market = exchange.market(symbol)
    except Exception as exc:  # noqa: BLE001 - unreachable, unknown symbol, bad key: same fallback
        log.info("market_info_not_fetched", exchange=ex_id, symbol=symbol, error=short_error(exc))
        return None
    mode = int(getattr(exchange, "precisionMode", TICK_SIZE))
    try:
        save_market(settings.data_dir, ex_id, symbol, market, mode)
    except OSError as exc:
        log.warning("market_info_not_saved", error=str(exc)[:200])
    return MarketInfo(
        {k: market.get(k) for k in _KEYS}, mode, datetime.now(UTC).isoformat(timespec="seconds")
    )


def market_rules(settings: Settings, exchange: Any = None) -> tuple[MarketRules, str]:
    """Fill rules, and where their precision and limits came from.

    Replaying stored candles (backtest, train, retrain; no ``exchange``): the stored market info
    first (what the last fetch or tick used: reproducible offline), else the exchange's. The daemon
    passes its ``exchange``: the market as it is now first (a paper account fills as a live one
    would today), the stored copy when the exchange is unreachable. ``trading.fee`` overrides only
    the fee. Without either, the config's fee and slippage with no precision or minimums, with a
    warning: such fills can differ from paper ones.
    """
    t, ex_id, symbol = settings.trading, settings.exchange.id, settings.market.symbol
    for where in ("stored", "exchange") if exchange is None else ("exchange", "stored"):
        if where == "stored":
            info = load_market(settings.data_dir, ex_id, symbol)
            source = f"stored {ex_id} market info of {info.saved_at}" if info else ""
        else:
            info = _from_exchange(settings, exchange)
            source = f"{ex_id} market info, read now"
        if info is not None:
            return rules_from_market(info.market, t, info.precision_mode), source
    if t.fee is None:
        raise ConfigError(
            f"trading.fee is empty and no {ex_id} market info for {symbol} is stored or reachable; "
            "pass --fee F or set trading.fee, or run `chartrl fetch` once to store it"
        )
    log.warning(
        "market_info_unavailable",
        exchange=ex_id,
        symbol=symbol,
        consequence="no amount precision, minimum amount or minimum notional: fills may differ from paper/live",
    )
    return rules_from_settings(
        t
    ), "none (config fee; no amount precision or minimums: fills may differ from paper/live)"


SYNTHETIC_SOURCE = "none: synthetic candles have no market (config fee and slippage; no amount precision or minimums)"
"""Where a run on synthetic candles (``chartrl train --synthetic``) takes its fill rules from."""


def fill_parameters(rules: MarketRules, source: str) -> dict[str, Any]:
    """The fill rules of a run and their origin, as a backtest report, model.json and a retrain
    result record them (the same keys everywhere, so runs compare)."""
    return {
        "market_info": source,
        "fee": rules.fee,
        "slippage_bps": rules.slippage_bps,
        "amount_step": rules.amount_step,
        "min_amount": rules.min_amount,
        "min_notional": rules.min_notional,
        "position_fraction": rules.position_fraction,
    }
