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

Channels. A pixel's value is the SUM of the weights of the elements drawn on it; the weights
are chosen so that every sum stays <= 255 and different combinations give different values (a
network can tell an MA lying on a band from either alone). The candle body always lies inside
its wick, so a body pixel is wick + body:
  channels = 3
    ch0 candles      wick 96, wick + down body 160, wick + up body 255
    ch1 overlays     sma[i] 128 >> i (128, 64 for the default two), Bollinger upper and lower
                     (128 >> n_ma) - 1 each (31)
    ch2 lower panels volume bar: up 255, down 160 (volume panel); RSI 255, or MACD 128,
                     signal 64, histogram 48 (oscillator panel)
  channels = 1 (one grey image, the same rule)
    price panel      wick 48, wick + down body 80, wick + up body 128; sma[i] 64 >> i,
                     bands (64 >> n_ma) - 1 each (15)
    lower panels     as ch2 above
  At most MAX_MAS moving averages, so every weight stays >= 1.
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
    """Every element ``spec`` draws, grouped by panel in drawing order."""
    n = len(spec.ma_periods)
    if n > MAX_MAS:
        raise ConfigError(f"chart.ma_periods has {n} periods; the chart draws at most {MAX_MAS}")
    grey = spec.channels == 1
    top = 64 if grey else 128
    ov = 0 if grey else 1  # overlay channel
    out = [
        Element("wick", "price", 0, 48 if grey else 96),
        Element("body_down", "price", 0, 32 if grey else 64),
        Element("body_up", "price", 0, 80 if grey else 159),
    ]
    out += [Element(f"sma_{p}", "price", ov, top >> i) for i, p in enumerate(spec.ma_periods)]
    if spec.bollinger_period is not None:
        band = (top >> n) - 1
        out += [Element("bb_upper", "price", ov, band), Element("bb_lower", "price", ov, band)]
    low = 0 if grey else 2  # channel of the lower panels
    if spec.volume:
        out += [Element("volume_up", "volume", low, 255), Element("volume_down", "volume", low, 160)]
    if spec.oscillator == "rsi":
        out.append(Element("rsi", "oscillator", low, 255))
    elif spec.oscillator == "macd":
        out += [
            Element("macd", "oscillator", low, 128),
            Element("macd_signal", "oscillator", low, 64),
            Element("macd_hist", "oscillator", low, 48),
        ]
    return out


def base_channels(spec: ChartSpec) -> int:
    return int(spec.channels)


def spec_channels(spec: ChartSpec) -> int:
    """Channels of the tensor for ``spec``, the diff-frame channels included."""
    return base_channels(spec) * (2 if spec.diff_frame else 1)


def max_pixel(spec: ChartSpec) -> dict[tuple[str, int], int]:
    """Largest possible value per (panel, channel): the sum of its weights (up/down exclusive)."""
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
