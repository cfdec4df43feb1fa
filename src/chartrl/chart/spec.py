"""ChartSpec: everything that decides what the policy's input picture looks like.

A checkpoint carries its ChartSpec; loading a model under a different one is refused, because the
same weights on a different picture mean nothing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Relative panel heights (see ChartSpec.panels).
PANEL_SHARES = {"price": 3, "volume": 1, "oscillator": 1}


class ChartSpec(BaseModel):
    """The chart image the policy reads (frozen, serialisable)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(250, ge=20, le=2000, description="Candles per chart window.")
    height: int = Field(100, ge=32, le=512, description="Image height in pixels (all panels).")
    width: int = Field(140, ge=32, le=1024, description="Image width in pixels.")
    ma_periods: tuple[int, ...] = Field(
        (5, 20), description="Simple moving averages drawn on the price panel."
    )
    bollinger_period: int | None = Field(
        20, ge=2, description="Bollinger band period; None draws no bands."
    )
    bollinger_std: float = Field(
        2.0, gt=0, description="Bollinger band width in standard deviations."
    )
    volume: bool = Field(True, description="Draw the volume panel under the price panel.")
    oscillator: Literal["rsi", "macd", "none"] = Field(
        "rsi", description="Oscillator panel: RSI(14), MACD(12,26,9) or none."
    )
    rsi_period: int = Field(14, ge=2, description="RSI period when oscillator = 'rsi'.")
    channels: Literal[1, 3] = Field(
        3, description="1 = grey levels per element; 3 = one colour channel per element group."
    )
    price_scaling: Literal["minmax"] = Field(
        "minmax", description="Per-window min-max price scaling (Jiang, Kelly & Xiu)."
    )
    diff_frame: bool = Field(
        False, description="Append the difference to the previous frame as extra channels."
    )

    @model_validator(mode="after")
    def _check(self) -> ChartSpec:
        if any(p < 1 or p >= self.window for p in self.ma_periods):
            raise ValueError(
                f"ma_periods {self.ma_periods} must each be between 1 and window-1 ({self.window - 1})"
            )
        if self.bollinger_period is not None and self.bollinger_period >= self.window:
            raise ValueError(
                f"bollinger_period {self.bollinger_period} must be below window {self.window}"
            )
        return self

    def panels(self) -> dict[str, tuple[int, int]]:
        """Row ranges ``[start, stop)`` of the panels, top to bottom: price, then volume, then oscillator.

        Shares are price 3 : volume 1 : oscillator 1 of the height (60/20/20 % with both lower
        panels, 75/25 % with one, the whole image with none); the price panel gets the rounding.
        """
        lower = [
            name
            for name, on in (("volume", self.volume), ("oscillator", self.oscillator != "none"))
            if on
        ]
        sub = {
            name: round(
                self.height
                * PANEL_SHARES[name]
                / (PANEL_SHARES["price"] + sum(PANEL_SHARES[n] for n in lower))
            )
            for name in lower
        }
        rows = {"price": (0, self.height - sum(sub.values()))}
        start = rows["price"][1]
        for name in lower:
            rows[name] = (start, start + sub[name])
            start += sub[name]
        return rows

    def diff(self, other: ChartSpec) -> list[str]:
        """Human-readable differences ``field: mine != other`` (empty when equal)."""
        a, b = self.model_dump(), other.model_dump()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b.get(k)]
