"""Market symbols as ccxt writes them: ``BASE/QUOTE`` for spot, ``BASE/QUOTE:SETTLE`` for derivatives."""

from __future__ import annotations


def base_quote(symbol: str) -> tuple[str, str]:
    """The base and quote currencies of ``symbol`` (``BTC/USDT:USDT`` -> ``("BTC", "USDT")``)."""
    base, sep, rest = symbol.partition("/")
    if not sep or not base or not rest:
        raise ValueError(f"symbol {symbol!r} is not BASE/QUOTE (e.g. BTC/USDT)")
    return base, rest.split(":")[0]
