"""The [market] section: the symbol or symbols traded, their timeframe, the reporting currency;
and the helpers that name a symbol's files and check currency tables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from chartrl.config.base import Section
from chartrl.symbols import base_quote
from chartrl.timeframe import timeframe_seconds


def check_currency(code: str) -> str:
    if not code.isalnum() or code != code.upper():
        raise ValueError(f"{code!r} must be a currency code in capitals, e.g. USDT, BTC, KRW")
    return code


def check_currency_amounts(v: dict[str, float], what: str) -> dict[str, float]:
    """A table {CURRENCY: amount > 0} (risk.max_total_quote, trading.initial_cash_by_quote)."""
    for currency, amount in v.items():
        check_currency(currency)
        if not amount > 0:
            raise ValueError(f"{currency} = {amount}: {what} must be > 0")
    return v


def check_symbol(v: str) -> str:
    base, sep, quote = v.partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"symbol {v!r} must be BASE/QUOTE, e.g. BTC/USDT")
    return v


class MarketSettings(Section):
    symbol: str = Field(
        "BTC/USDT",
        description="Unified ccxt symbol BASE/QUOTE. With market.symbols set: the one of them that "
        "single-series commands (backtest, train, fetch, status --symbol) use; default its first.",
    )
    symbols: list[str] | None = Field(
        None,
        description="Daemon: several symbols traded at once, one tick job, book, recurrent state, "
        "risk limits and halts each (docs/daemon.md). Empty = market.symbol alone.",
    )
    reporting_currency: str | None = Field(
        None,
        description="Currency `chartrl status` totals every symbol's equity in (converted at stored "
        "prices; a missing price is said, never guessed). Empty = the quote of market.symbol.",
    )
    timeframe: str = Field(
        "1h", description="Candle timeframe (ccxt name: 1m, 5m, 15m, 1h, 4h, 1d...)."
    )
    since: str = Field(
        "2017-08-01", description="First date fetched when nothing is stored yet (UTC)."
    )

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        return check_symbol(v)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("an empty list trades nothing; list one symbol or more, or drop it")
        for sym in v:
            check_symbol(sym)
        twice = sorted({sym for sym in v if v.count(sym) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed twice; list each symbol once")
        return v

    @field_validator("reporting_currency")
    @classmethod
    def _currency(cls, v: str | None) -> str | None:
        return None if v is None else check_currency(v)

    @model_validator(mode="after")
    def _symbol_in_symbols(self) -> MarketSettings:
        if self.symbols is None:
            return self
        if "symbol" not in self.model_fields_set:
            # Single-series commands default to the first listed symbol.
            object.__setattr__(self, "symbol", self.symbols[0])
        elif self.symbol not in self.symbols:
            raise ValueError(
                f"market.symbol = {self.symbol!r} is not one of market.symbols "
                f"{self.symbols}; drop market.symbol or add it to market.symbols"
            )
        return self

    @property
    def all_symbols(self) -> list[str]:
        """Every symbol the daemon trades: market.symbols, else market.symbol alone."""
        return list(self.symbols) if self.symbols is not None else [self.symbol]

    @property
    def reporting(self) -> str:
        """The currency totals are reported in."""
        return self.reporting_currency or base_quote(self.symbol)[1]

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, v: str) -> str:
        timeframe_seconds(v)
        return v

    @field_validator("since", mode="before")
    @classmethod
    def _date_as_text(cls, v: object) -> object:
        # An unquoted TOML date (since = 2018-01-01, also via CHARTRL__MARKET__SINCE) arrives as a date.
        from datetime import date

        return v.isoformat() if isinstance(v, date) else v

    @field_validator("since")
    @classmethod
    def _iso_date(cls, v: str) -> str:
        from datetime import datetime

        try:
            datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("must be an ISO date such as 2017-08-01 (UTC)") from None
        return v


def symbol_slug(symbol: str) -> str:
    """``BTC/USDT`` -> ``BTC-USDT`` (``:SETTLE`` dropped): a symbol as a file or directory name."""
    return symbol.split(":")[0].replace("/", "-")


def symbol_model_dir(model_dir: Path, symbol: str) -> Path:
    """The champion of one symbol under model.per_symbol: ``<model dir>/<BASE-QUOTE>``."""
    return model_dir / symbol_slug(symbol)
