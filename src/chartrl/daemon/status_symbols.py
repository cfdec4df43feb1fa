"""``chartrl status`` for a daemon trading several symbols: a line per symbol and the total.

Each symbol's line is its own book (paper book or live own balances), its last decision, its
halts and its health as the daemon last wrote it (daemon.json). The total adds the equities in the
reporting currency (``market.reporting_currency``, default the quote of ``market.symbol``). A
quote currency is converted at the newest price the data dir has for it: a traded symbol's last
decision price (QUOTE/REPORTING or REPORTING/QUOTE), else the last stored candle of such a pair on
the configured exchange and timeframe. No price, no conversion: the total says which amounts it
left out and how to get a price; it never guesses.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chartrl.symbols import base_quote


@dataclass
class SymbolLine:
    symbol: str
    quote: str
    position: float | None = None
    cash: float | None = None
    equity: float | None = None
    initial_equity: float | None = None
    last_candle: str | None = None
    last_decision: str | None = None
    last_reason: str | None = None
    model_version: str | None = None
    halted: list[str] = field(default_factory=list)
    """Reasons of the halts that stop this symbol (its own and the all-symbol ones)."""
    health: dict[str, Any] | None = None


@dataclass
class Total:
    currency: str
    equity: float | None = None
    """Sum of what could be converted (None when nothing could)."""
    rates: dict[str, float] = field(default_factory=dict)
    """Price of 1 unit of each quote currency in the reporting currency, as used."""
    rate_sources: dict[str, str] = field(default_factory=dict)
    missing: dict[str, float] = field(default_factory=dict)
    """Equity per quote currency left out of the total: no price to convert it at."""


def symbol_lines(
    conn: sqlite3.Connection,
    fill: Any,
    symbols: list[str],
    mode: str | None,
    health: dict[str, Any],
) -> list[SymbolLine]:
    """One line per symbol; ``fill(conn, status)`` is status.py's ledger reader, reused per symbol."""
    from chartrl.daemon.status import Status

    lines = []
    for symbol in symbols:
        st = Status(symbol=symbol, mode=mode)
        fill(conn, st)
        lines.append(
            SymbolLine(
                symbol=symbol,
                quote=base_quote(symbol)[1],
                position=st.position,
                cash=st.cash,
                equity=st.equity,
                initial_equity=st.initial_equity,
                last_candle=st.last_candle,
                last_decision=st.last_decision,
                last_reason=st.last_reason,
                model_version=st.model_version,
                halted=[h["reason"] for h in st.halts if h.get("symbol") in (None, symbol)],
                health=health.get(symbol),
            )
        )
    return lines


def _ledger_price(conn: sqlite3.Connection, symbol: str, mode: str | None) -> float | None:
    try:
        row = conn.execute(
            "SELECT price FROM decisions WHERE symbol = ? AND price IS NOT NULL"
            + (" AND mode = ?" if mode else "")
            + " ORDER BY id DESC LIMIT 1",
            (symbol, mode) if mode else (symbol,),
        ).fetchone()
    except sqlite3.OperationalError:
        return None
    return float(row[0]) if row else None


def _stored_price(data_dir: Path, exchange: str, symbol: str, timeframe: str) -> float | None:
    from chartrl.errors import DataError
    from chartrl.market.store import CandleStore

    store = CandleStore(data_dir)
    try:
        last = store.last_timestamp(exchange, symbol, timeframe)
        if last is None:
            return None
        return float(
            store.load(exchange, symbol, timeframe, start=last, end=last)["close"].iloc[-1]
        )
    except (DataError, OSError, IndexError):
        return None


def conversion_rate(
    conn: sqlite3.Connection,
    data_dir: Path,
    quote: str,
    reporting: str,
    *,
    mode: str | None,
    exchange: str,
    timeframe: str,
) -> tuple[float, str] | None:
    """Price of 1 ``quote`` in ``reporting`` and where it came from; None when nothing has it."""
    if quote == reporting:
        return 1.0, "same currency"
    for pair, invert in ((f"{quote}/{reporting}", False), (f"{reporting}/{quote}", True)):
        price = _ledger_price(conn, pair, mode)
        source = f"last decision price of {pair}"
        if price is None:
            price = _stored_price(data_dir, exchange, pair, timeframe)
            source = f"last stored {exchange} {pair} {timeframe} candle"
        if price is not None and price > 0:
            return (1.0 / price if invert else price), source
    return None


def total(
    conn: sqlite3.Connection,
    data_dir: Path,
    lines: list[SymbolLine],
    reporting: str,
    *,
    mode: str | None,
    exchange: str,
    timeframe: str,
) -> Total:
    out = Total(reporting)
    per_quote: dict[str, float] = {}
    for line in lines:
        if line.equity is not None:
            per_quote[line.quote] = per_quote.get(line.quote, 0.0) + line.equity
    for quote, equity in per_quote.items():
        rate = conversion_rate(
            conn, data_dir, quote, reporting, mode=mode, exchange=exchange, timeframe=timeframe
        )
        if rate is None:
            out.missing[quote] = equity
            continue
        out.rates[quote], out.rate_sources[quote] = rate
        out.equity = (out.equity or 0.0) + equity * rate[0]
    return out


def _money(x: float) -> str:
    # Cents for USDT-sized amounts; significant digits for BTC-sized ones (0.00012345 BTC).
    return f"{x:,.2f}" if abs(x) >= 1000 else f"{x:,.8g}"


def format_lines(lines: list[SymbolLine], tot: Total | None) -> list[str]:
    """The per-symbol block and the total line of ``chartrl status``."""
    out = []
    for ln in lines:
        pos = "-" if ln.position is None else f"{ln.position:.8g}"
        eq = "-" if ln.equity is None else f"{_money(ln.equity)} {ln.quote}"
        h = ln.health or {}
        health = h.get("state", "-")
        if h.get("state") == "failing":
            health += f" x{h.get('failures', 1)}: {(h.get('error') or '')[:120]}"
        elif h.get("state") == "missed" and h.get("error"):
            health += f" ({h['error']})"
        halt = f"   HALTED ({', '.join(sorted(set(ln.halted)))})" if ln.halted else ""
        out.append(
            f"  {ln.symbol:<12} pos {pos:<12} equity {eq:<20} "
            f"{ln.last_decision or '-'} @ {ln.last_candle or '-'}   health {health}{halt}"
        )
    if tot is not None:
        text = f"{'n/a' if tot.equity is None else _money(tot.equity)} {tot.currency}"
        rates = ", ".join(
            f"1 {q} = {r:.8g} {tot.currency} ({tot.rate_sources[q]})"
            for q, r in tot.rates.items()
            if q != tot.currency
        )
        line = f"total         {text}" + (f"   at {rates}" if rates else "")
        for q, eq in tot.missing.items():
            line += (
                f"   + {_money(eq)} {q} not converted: no {q}/{tot.currency} or {tot.currency}/{q} "
                f"price traded or stored (`chartrl fetch --symbol {q}/{tot.currency}`)"
            )
        out.append(line)
    return out


def as_dicts(lines: list[SymbolLine], tot: Total | None) -> dict[str, Any]:
    return {"symbols": [asdict(ln) for ln in lines], "total": asdict(tot) if tot else None}
