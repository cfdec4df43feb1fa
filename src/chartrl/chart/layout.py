"""What the chart tensor contains: pixel columns per candle, drawn elements, channels and levels.

Both renderers (the batched tensor one and mplfinance's fidelity path) read this module, so the
picture's layout is written down once.

Columns. A window of n candles is drawn into W pixel columns. When n >= W (the default: 250
candles in 140 columns, 1.8 candles a column) column c aggregates the candles whose centre
``(i + 0.5) * W / n`` falls in it, like an OHLC resample: high = max high, low = min low,
open = first open, close = last close, volume = max volume (the top of the tallest bar, which is
what a full-resolution chart shows in that column). When n < W each candle spans one or more
columns and column c shows candle ``floor((c + 0.5) * n / W)``.

Lines (MAs, Bollinger bands, RSI, MACD and its signal) are connected: column c covers the rows
between the smallest and the largest value of its own candles and of the last candle of the
column before, so consecutive points are joined by a vertical run.

Channels. A pixel's value is the SUM of the weights of the elements drawn on it, and the weights
are bit fields: the i-th element of a (panel, channel) group weighs ``128 >> i``. So every subset
of a group's elements gives its own value <= 255 (a network can tell an MA lying on a band from
either alone, and ``pixel & weight`` says whether that element is there), at the price of at most
8 elements per group. The candle body always lies inside its wick, so a body pixel is wick + body:
  channels = 3
    ch0 candles      wick 128, body_up 64, body_down 32: wick 128, wick + up body 192, wick + down body 160
    ch1 overlays     sma[i] then Bollinger upper, lower: 128, 64, 32, 16 for the default two MAs
    ch2 lower panels volume bar: up 128, down 64 (volume panel); RSI 128, or MACD 128,
                     signal 64, histogram 32 (oscillator panel)
  channels = 1 (one grey image, the same rule)
    price panel      wick 128, body_up 64, body_down 32, then sma[i], then the bands: 16, 8, 4, 2
                     for the default two MAs, so with bands at most 3 MAs fit in the 8 bits
    lower panels     as ch2 above
  At most MAX_MAS moving averages in colour.
A column's candle is up when its close >= its open (first open, last close of the column); the
volume bar takes the same colour.
diff_frame appends, per channel, the difference to the frame of the previous candle encoded as
``128 + floor((this - previous) / 2)``: 128 = unchanged, 0 = a 255 pixel vanished, 255 = a 255
pixel appeared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chartrl.chart.spec import ChartSpec
from chartrl.errors import ConfigError

MAX_MAS = 5


@dataclass(frozen=True)
class Element:
    """One drawn element: its panel, channel and additive weight (see the module docstring)."""

    name: str
    panel: str
    channel: int
    weight: int


def elements(spec: ChartSpec) -> list[Element]:
    """Every element ``spec`` draws, grouped by panel in drawing order, with its bit-field weight."""
    n = len(spec.ma_periods)
    if n > MAX_MAS:
        raise ConfigError(f"chart.ma_periods has {n} periods; the chart draws at most {MAX_MAS}")
    grey = spec.channels == 1
    ov = 0 if grey else 1  # overlay channel
    low = 0 if grey else 2  # channel of the lower panels
    named = [("wick", "price", 0), ("body_up", "price", 0), ("body_down", "price", 0)]
    named += [(f"sma_{p}", "price", ov) for p in spec.ma_periods]
    if spec.bollinger_period is not None:
        named += [("bb_upper", "price", ov), ("bb_lower", "price", ov)]
    if spec.volume:
        named += [("volume_up", "volume", low), ("volume_down", "volume", low)]
    if spec.oscillator == "rsi":
        named.append(("rsi", "oscillator", low))
    elif spec.oscillator == "macd":
        named += [
            ("macd", "oscillator", low),
            ("macd_signal", "oscillator", low),
            ("macd_hist", "oscillator", low),
        ]
    out: list[Element] = []
    taken: dict[tuple[str, int], int] = {}
    for name, panel, channel in named:
        i = taken.get((panel, channel), 0)
        if i == 8:
            raise ConfigError(
                f"chart.channels = {spec.channels} puts more than 8 elements in one 8-bit channel of the {panel} panel; "
                f"use fewer ma_periods (at most 3 with Bollinger bands in grey) or channels = 3"
            )
        taken[(panel, channel)] = i + 1
        out.append(Element(name, panel, channel, 128 >> i))
    return out


def base_channels(spec: ChartSpec) -> int:
    return int(spec.channels)


def spec_channels(spec: ChartSpec) -> int:
    """Channels of the tensor for ``spec``, the diff-frame channels included."""
    return base_channels(spec) * (2 if spec.diff_frame else 1)


def max_pixel(spec: ChartSpec) -> dict[tuple[str, int], int]:
    """Largest value a pixel takes per (panel, channel): the sum of its weights (up/down exclusive)."""
    total: dict[tuple[str, int], int] = {}
    for el in elements(spec):
        if el.name in ("body_down", "volume_down"):
            continue  # exclusive with the up element of the same column
        total[(el.panel, el.channel)] = total.get((el.panel, el.channel), 0) + el.weight
    return total


@dataclass(frozen=True)
class Columns:
    """Candle ranges (offsets within the window) per pixel column, for candles and for lines."""

    start: np.ndarray  # (W,) first candle of the column
    stop: np.ndarray  # (W,) one past the last candle
    line_start: np.ndarray  # (W,) first candle of the line run (the previous column's last candle)


def columns(window: int, width: int) -> Columns:
    """How the window's candles map onto pixel columns (see the module docstring)."""
    if window >= width:
        col_of = np.floor((np.arange(window) + 0.5) * width / window).astype(np.int64)
        start = np.searchsorted(col_of, np.arange(width), side="left")
        stop = np.searchsorted(col_of, np.arange(width), side="right")
    else:
        start = np.floor((np.arange(width) + 0.5) * window / width).astype(np.int64)
        stop = start + 1
    assert (stop > start).all(), "every column must hold a candle"
    prev_start = np.concatenate([[-1], start[:-1]])
    # A new candle in this column joins the previous one; a repeated candle (n < W) stays flat.
    line_start = np.where((np.arange(width) > 0) & (start != prev_start), start - 1, start)
    return Columns(start=start, stop=stop, line_start=line_start)


def column_centres(window: int, width: int) -> np.ndarray:
    """(window,) x position, in pixels, of each candle's centre (what mplfinance draws at x = i)."""
    return (np.arange(window) + 0.5) * width / window
