"""Market symbols as ccxt writes them: ``BASE/QUOTE`` for spot, ``BASE/QUOTE:SETTLE`` for derivatives."""

from __future__ import annotations


def base_quote(symbol: str) -> tuple[str, str]:
    """The base and quote currencies of ``symbol`` (``BTC/USDT:USDT`` -> ``("BTC", "USDT")``)."""
    base, sep, rest = symbol.partition("/")
    if not sep or not base or not rest:
        raise ValueError(f"symbol {symbol!r} is not BASE/QUOTE (e.g. BTC/USDT)")
    return base, rest.split(":")[0]


def parse_series(text: str, option: str = "--series") -> list[tuple[str, str, str]]:
    """``exchange:BASE/QUOTE:timeframe`` items, comma separated, as (exchange, symbol, timeframe).
    The symbol may carry a settle currency (``binance:BTC/USDT:USDT:1h``): the exchange is what
    precedes the first colon, the timeframe what follows the last."""
    from chartrl.errors import UsageError

    out: list[tuple[str, str, str]] = []
    for item in (x.strip() for x in text.split(",")):
        exchange, _, rest = item.partition(":")
        symbol, _, timeframe = rest.rpartition(":")
        try:
            base_quote(symbol)
        except ValueError:
            symbol = ""
        if not (exchange and symbol and timeframe):
            raise UsageError(
                f"{option} {item!r}: write each series as exchange:BASE/QUOTE:timeframe, "
                "e.g. binance:BTC/USDT:1h,binance:ETC/BTC:1h"
            )
        if (exchange, symbol, timeframe) in out:
            raise UsageError(f"{option}: {item} is given twice")
        out.append((exchange, symbol, timeframe))
    return out


def series_name(exchange: str, symbol: str, timeframe: str) -> str:
    """The ``exchange:BASE/QUOTE:timeframe`` form ``parse_series`` reads."""
    return f"{exchange}:{symbol}:{timeframe}"


def series_slug(name: str) -> str:
    """A column- and path-safe form of a series name: ``binance:BTC/USDT:1h`` ->
    ``binance_BTC-USDT_1h`` (history.csv ``val_sharpe@<slug>``, the transfer matrix' folders)."""
    return name.replace("/", "-").replace(":", "_")
