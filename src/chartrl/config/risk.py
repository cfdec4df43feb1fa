"""The [risk] section: limits every action passes before an account executes it (account/risk.py),
per symbol, with per-symbol overrides and a total per quote currency."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from chartrl.config.base import Section
from chartrl.config.market import check_currency_amounts, check_symbol


class RiskOverride(Section):
    """One symbol's own risk limits (``[risk.per_symbol."ETH/USDT"]``); a field left out keeps
    the [risk] value."""

    max_position_value: float | None = Field(None, gt=0, description="As risk.max_position_value.")
    max_orders_per_day: int | None = Field(None, ge=1, description="As risk.max_orders_per_day.")
    max_daily_loss: float | None = Field(None, gt=0, le=1, description="As risk.max_daily_loss.")
    on_daily_loss: Literal["flatten", "stop_buying"] | None = Field(
        None, description="As risk.on_daily_loss."
    )
    stale_after_timeframes: float | None = Field(
        None, gt=0, description="As risk.stale_after_timeframes."
    )


class RiskSettings(Section):
    max_position_value: float | None = Field(
        None,
        gt=0,
        description="Largest position value of one symbol, in its quote currency; empty = no limit.",
    )
    max_total_quote: dict[str, float] = Field(
        default_factory=dict,
        description="Largest value of all symbols' positions together, per quote currency (a table "
        '{ "USDT" = 5000.0, "BTC" = 0.2 }: BTC/USDT and ETH/USDT share the USDT total, ETC/BTC has '
        "the BTC one); a buy beyond it is capped or held. A quote not listed has no total limit.",
    )
    max_orders_per_day: int = Field(
        48, ge=1, description="Orders allowed per UTC day (per symbol)."
    )
    max_daily_loss: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Loss of equity since the UTC day's start that fires the kill switch.",
    )
    on_daily_loss: Literal["flatten", "stop_buying"] = Field(
        "stop_buying", description="What the kill switch does."
    )
    stale_after_timeframes: float = Field(
        2.0,
        gt=0,
        description="No trade when the newest closed candle is older than this many timeframes.",
    )
    halt_file: Path | None = Field(
        None,
        description="When this file exists, no order is sent, for any symbol (operator's manual halt). "
        "Empty = <data dir>/HALT.",
    )

    per_symbol: dict[str, RiskOverride] = Field(
        default_factory=dict,
        description='Own limits of some of market.symbols, e.g. [risk.per_symbol."ETH/USDT"] '
        "max_position_value = 500.0; the others (and every field left out) keep these.",
    )

    @field_validator("per_symbol")
    @classmethod
    def _override_symbols(cls, v: dict[str, RiskOverride]) -> dict[str, RiskOverride]:
        for symbol in v:
            check_symbol(symbol)
        return v

    def for_symbol(self, symbol: str) -> RiskSettings:
        """The limits ``symbol`` trades under: these, with its per_symbol entry applied."""
        override = self.per_symbol.get(symbol)
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))

    @field_validator("max_total_quote")
    @classmethod
    def _quote_totals(cls, v: dict[str, float]) -> dict[str, float]:
        return check_currency_amounts(v, "a total limit")
