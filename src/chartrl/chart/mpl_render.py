"""mplfinance renderers: the chart a person reads, and a slow copy of the model's tensor.

``render_png`` draws one window the way a trader looks at it (title, axes, legend). It is for
people; the policy never sees it.

``render_tensor_mpl`` draws the windows the model sees through mplfinance at the tensor's exact
pixel size and layout (chart/layout.py) and composes the same channels, one element at a time:
a fidelity check of the fast renderer (tests/test_render.py compares them). Matplotlib maps an
axis limit to the panel's outer edge while the tensor puts the window's extremes on the centres
of the first and last rows/columns, so the limits here are padded by half a pixel; candle i sits
at x = i with x limits (-0.5, n - 0.5), i.e. its centre at pixel (i + 0.5) * W / n, the tensor's
column rule. Antialiasing is off so every drawn pixel is either on or off. How candles are drawn
follows the tensor's two column regimes (see ``_Canvas``):

- n >= W (the default): wicks, bodies and volume bars are one-pixel lines (body/bar width 0.01
  candle, 1 px edges), so no edge spills into the next column, and the view is shifted by about
  half a pixel to undo Agg's line snapping.
- n < W: the tensor fills every column of a candle's slot, so bodies and volume bars are filled
  full-slot rectangles, half a pixel row taller at each end (the tensor gives the end values their
  own rows), and the wick is drawn the same way as a body spanning low..high (mplfinance's own
  wick is a line at the candle's centre, one column wide).

Measured (tests/test_render.py, synthetic and real BTC): the candle and volume extents of every
column agree within 1 px (float32 rounding against Agg's snapping on a half-pixel boundary).
Lines (MAs, bands, RSI, MACD) do not agree to the pixel, by design: Agg draws the segment between
two candle centres across every column it passes, the tensor draws a column's whole joining run
in that column, so per column a line's rows may differ by up to the rise between two
neighbouring candles. Measured bound, tested: a line's pixels in column c lie within 2 px of the
rows the tensor draws for it in columns c-2..c+2 (the half-pixel view shift above moves lines
too, and a one-pixel diagonal covers a pixel more).

Both use the Agg backend (headless) and never touch pyplot's global state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chartrl.chart import layout
from chartrl.chart.indicators import compute_indicators, ma_column
from chartrl.chart.spec import ChartSpec
from chartrl.errors import DataError

_UP, _DOWN, _WICK = "#00ff00", "#0000ff", "#ff0000"


def _window(candles: pd.DataFrame, ind: pd.DataFrame, spec: ChartSpec, end: int) -> pd.DataFrame:
    """The window ending at ``end`` as mplfinance wants it (DatetimeIndex, capitalised OHLCV)."""
    start = end - spec.window + 1
    if start < 0 or end >= len(candles):
        raise DataError(
            f"candle {end} has no complete window of {spec.window} candles in a series of {len(candles)}"
        )
    w = candles.iloc[start : end + 1]
    if "timestamp" in w.columns:
        idx = pd.DatetimeIndex(w["timestamp"]).tz_convert("UTC").tz_localize(None)
    else:
        idx = pd.date_range("2000-01-01", periods=len(w), freq="h")
    df = pd.DataFrame(
        {
            "Open": w["open"].to_numpy(),
            "High": w["high"].to_numpy(),
            "Low": w["low"].to_numpy(),
            "Close": w["close"].to_numpy(),
            "Volume": w["volume"].to_numpy(),
        },
        index=idx,
    )
    for c in ind.columns:
        df[c] = ind[c].to_numpy()[start : end + 1]
    if df.isna().any().any():
        raise DataError(
            f"the window ending at candle {end} has undefined indicators or candles; use a later candle"
        )
    return df


def _price_lines(spec: ChartSpec) -> list[str]:
    return [ma_column(p) for p in spec.ma_periods] + (
        ["bb_upper", "bb_lower"] if spec.bollinger_period else []
    )


# ---- the chart a person reads ------------------------------------------------------------------


def render_png(
    candles: pd.DataFrame,
    spec: ChartSpec,
    end_index: int,
    path: str | Path,
    dpi: int = 100,
    title: str | None = None,
    indicators: pd.DataFrame | None = None,
) -> Path:
    """Write the window ending at candle ``end_index`` as a readable PNG; returns the path."""
    import logging

    import matplotlib

    matplotlib.use("Agg", force=False)
    import mplfinance as mpf

    # mplfinance's styles ask for a 'semibold' title DejaVu lacks; matplotlib's fallback is fine.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    ind = compute_indicators(candles, spec) if indicators is None else indicators
    df = _window(candles, ind, spec, end_index)
    colours = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]
    plots = [
        mpf.make_addplot(df[ma_column(p)], color=colours[i % 5], width=1.2, label=f"SMA({p})")
        for i, p in enumerate(spec.ma_periods)
    ]
    if spec.bollinger_period is not None:
        bb = f"Bollinger({spec.bollinger_period}, {spec.bollinger_std:g})"
        plots += [
            mpf.make_addplot(df["bb_upper"], color="#7f7f7f", width=0.9, linestyle="--", label=bb),
            mpf.make_addplot(df["bb_lower"], color="#7f7f7f", width=0.9, linestyle="--"),
        ]
    panel = 1 + int(spec.volume)
    ratios = [layout_share("price")] + ([layout_share("volume")] if spec.volume else [])
    if spec.oscillator == "rsi":
        plots += [
            mpf.make_addplot(
                df["rsi"],
                panel=panel,
                color="#d62728",
                width=1.0,
                ylim=(0, 100),
                secondary_y=False,
                ylabel=f"RSI({spec.rsi_period})",
                label=f"RSI({spec.rsi_period})",
            ),
            mpf.make_addplot(
                pd.Series(70.0, index=df.index),
                panel=panel,
                color="#999999",
                width=0.6,
                linestyle=":",
                secondary_y=False,
            ),
            mpf.make_addplot(
                pd.Series(30.0, index=df.index),
                panel=panel,
                color="#999999",
                width=0.6,
                linestyle=":",
                secondary_y=False,
            ),
        ]
        ratios.append(layout_share("oscillator"))
    elif spec.oscillator == "macd":
        hist_colours = ["#26a69a" if v >= 0 else "#ef5350" for v in df["macd_hist"]]
        plots += [
            mpf.make_addplot(
                df["macd_hist"],
                panel=panel,
                type="bar",
                color=hist_colours,
                ylabel="MACD(12,26,9)",
                secondary_y=False,
            ),
            mpf.make_addplot(
                df["macd"], panel=panel, color="#1f77b4", width=1.0, label="MACD", secondary_y=False
            ),
            mpf.make_addplot(
                df["macd_signal"],
                panel=panel,
                color="#ff7f0e",
                width=1.0,
                label="signal",
                secondary_y=False,
            ),
        ]
        ratios.append(layout_share("oscillator"))
    last = df.index[-1]
    heading = f"{title + ' — ' if title else ''}{spec.window} candles to {last:%Y-%m-%d %H:%M} UTC (close {df['Close'].iloc[-1]:,.2f})"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, _ = mpf.plot(
        df[["Open", "High", "Low", "Close", "Volume"]],
        type="candle",
        style="yahoo",
        volume=spec.volume,
        addplot=plots or None,
        panel_ratios=tuple(ratios) if len(ratios) > 1 else None,
        title=heading,
        ylabel="Price",
        ylabel_lower="Volume",
        figsize=(12, 8),
        returnfig=True,
        warn_too_much_data=10_000,
        datetime_format="%m-%d %H:%M",
    )
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.2)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def layout_share(panel: str) -> int:
    from chartrl.chart.spec import PANEL_SHARES

    return PANEL_SHARES[panel]


# ---- the model's tensor, the slow way -------------------------------------------------------------


class _Canvas:
    """A black W x H Agg figure with one borderless axes per panel, placed on the tensor's rows."""

    def __init__(self, spec: ChartSpec, dpi: int = 100) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.spec, self.dpi = spec, dpi
        self.fig = Figure(figsize=(spec.width / dpi, spec.height / dpi), dpi=dpi, facecolor="black")
        FigureCanvasAgg(self.fig)
        self.axes = {}
        for name, (p0, p1) in spec.panels().items():
            ax = self.fig.add_axes((0.0, 1 - p1 / spec.height, 1.0, (p1 - p0) / spec.height))
            ax.set_facecolor("black")
            self.axes[name] = ax
        # Whether candles are wider than a pixel (n < W) and drawn as filled slots (module docstring).
        self.slots = spec.window < spec.width
        # n >= W: Agg snaps a one-pixel line to the pixel whose index is round(x) in pixel units,
        # while the tensor uses floor(x) (pixel centres at +0.5). Shifting the view by half a pixel
        # makes the two agree; 0.49 rather than 0.5 so a candle centred exactly on a column boundary
        # (every 25th candle at 250 candles in 140 columns) goes right, as floor() sends it.
        # n < W: an unstroked rectangle's edges snap to the nearest pixel edge, which already matches
        # the tensor's slot columns; the 0.01 px shifts send edges on exact half pixels the
        # tensor's way (and keep a volume bar's foot on the bottom row).
        self.shift_x, self.shift_y = (0.01, 0.01) if self.slots else (0.49, -0.5)

    def row_height(self, panel: str, lo: float, hi: float) -> float:
        """One pixel row of ``panel`` in data units when it spans ``lo``..``hi``."""
        p0, p1 = self.spec.panels()[panel]
        return max(hi - lo, 1e-12) / (p1 - p0 - 1)

    def limits(self, panel: str, lo: float, hi: float) -> None:
        px = self.row_height(panel, lo, hi)
        self.axes[panel].set_ylim(
            lo - 0.5 * px + self.shift_y * px, hi + 0.5 * px + self.shift_y * px
        )
        pxx = self.spec.window / self.spec.width
        self.axes[panel].set_xlim(
            -0.5 + self.shift_x * pxx, self.spec.window - 0.5 + self.shift_x * pxx
        )

    def clear(self) -> None:
        for ax in self.axes.values():
            ax.clear()
            ax.set_facecolor("black")

    def pixels(self) -> np.ndarray:
        """(H, W, 3) uint8 after drawing, with every axis decoration switched off."""
        for ax in self.axes.values():
            ax.set_axis_off()
            for artist in ax.collections + ax.lines + ax.patches:
                artist.set_antialiased(False)
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()


def _style(mpf):  # noqa: ANN001, ANN202 - mplfinance's style dict
    mc = mpf.make_marketcolors(up=_UP, down=_DOWN, edge="inherit", wick=_WICK, volume="in")
    return mpf.make_mpf_style(
        marketcolors=mc, facecolor="black", figcolor="black", gridstyle="", edgecolor="black"
    )


def _line_mask(
    canvas: _Canvas, mpf, df: pd.DataFrame, values: np.ndarray, panel: str, lo: float, hi: float
) -> np.ndarray:  # noqa: ANN001
    """Pixels of one line drawn alone through mplfinance (a 'line' chart of those values)."""
    canvas.clear()
    line = pd.DataFrame(
        {"Open": values, "High": values, "Low": values, "Close": values}, index=df.index
    )
    mc = mpf.make_marketcolors(up="white", down="white", edge="white", wick="white")
    style = mpf.make_mpf_style(
        marketcolors=mc, facecolor="black", figcolor="black", gridstyle="", edgecolor="black"
    )
    mpf.plot(
        line,
        type="line",
        ax=canvas.axes[panel],
        style=style,
        linecolor="white",
        warn_too_much_data=10_000,
        update_width_config={"line_width": 72.0 / canvas.dpi},
    )
    canvas.limits(panel, lo, hi)
    return canvas.pixels().max(axis=2) > 127


def _slot_candles(df: pd.DataFrame, half_row: float, half_vol_row: float) -> pd.DataFrame:
    """OHLCV with every bar half a pixel row taller at each end (n < W, see the module docstring)."""
    up = df["Close"] >= df["Open"]
    out = df[["Open", "High", "Low", "Close", "Volume"]].copy()
    out["Open"] = np.where(up, df["Open"] - half_row, df["Open"] + half_row)
    out["Close"] = np.where(up, df["Close"] + half_row, df["Close"] - half_row)
    out["High"], out["Low"] = df["High"] + half_row, df["Low"] - half_row
    out["Volume"] = df["Volume"] + half_vol_row
    return out


def _masks(canvas: _Canvas, df: pd.DataFrame, spec: ChartSpec) -> dict[str, np.ndarray]:
    """(H, W) bool mask of every element of layout.elements(spec) for one window."""
    import mplfinance as mpf

    panels = spec.panels()
    lines = _price_lines(spec)
    lo = float(np.min([df["Low"].min()] + [df[c].min() for c in lines]))
    hi = float(np.max([df["High"].max()] + [df[c].max() for c in lines]))
    vmax = float(df["Volume"].max())
    ohlcv = df[["Open", "High", "Low", "Close", "Volume"]]
    if canvas.slots:
        vol_row = canvas.row_height("volume", 0.0, vmax) if spec.volume else 0.0
        ohlcv = _slot_candles(df, canvas.row_height("price", lo, hi) / 2, vol_row / 2)
        widths = {
            "candle_linewidth": 0.0,
            "candle_width": 1.0,
            "volume_linewidth": 0.0,
            "volume_width": 1.0,
        }
    else:
        one = 72.0 / canvas.dpi  # one pixel, in points
        widths = {
            "candle_linewidth": one,
            "candle_width": 0.01,
            "volume_linewidth": one,
            "volume_width": 0.01,
        }
    canvas.clear()
    mpf.plot(
        ohlcv,
        type="candle",
        ax=canvas.axes["price"],
        volume=canvas.axes["volume"] if spec.volume else False,
        style=_style(mpf),
        warn_too_much_data=10_000,
        update_width_config=widths,
    )
    canvas.limits("price", lo, hi)
    if spec.volume:
        canvas.limits("volume", 0.0, vmax)
    px = canvas.pixels().astype(np.int16)
    red, green, blue = px[..., 0] > 127, px[..., 1] > 127, px[..., 2] > 127
    rows = np.arange(spec.height)[:, None]

    def in_panel(name: str) -> np.ndarray:
        p0, p1 = panels[name]
        return (rows >= p0) & (rows < p1)

    price = in_panel("price")
    out = {"body_up": green & ~red & price, "body_down": blue & ~red & ~green & price}
    if canvas.slots:  # the wick as a full-slot body from low to high
        wick = pd.DataFrame(
            {
                "Open": ohlcv["Low"],
                "High": ohlcv["High"],
                "Low": ohlcv["Low"],
                "Close": ohlcv["High"],
            },
            index=df.index,
        )
        canvas.clear()
        mpf.plot(
            wick,
            type="candle",
            ax=canvas.axes["price"],
            style=_style(mpf),
            warn_too_much_data=10_000,
            update_width_config=widths,
        )
        canvas.limits("price", lo, hi)
        out["wick"] = (canvas.pixels().max(axis=2) > 127) & price
    else:
        out["wick"] = (
            red | out["body_up"] | out["body_down"]
        ) & price  # the body lies over its wick
    if spec.volume:
        vol = in_panel("volume")
        out["volume_up"], out["volume_down"] = green & vol, blue & ~green & vol
    for c in lines:
        out[c] = _line_mask(canvas, mpf, df, df[c].to_numpy(), "price", lo, hi)
    if spec.oscillator == "rsi":
        out["rsi"] = _line_mask(canvas, mpf, df, df["rsi"].to_numpy(), "oscillator", 0.0, 100.0)
    elif spec.oscillator == "macd":
        m = df[["macd", "macd_signal", "macd_hist"]].to_numpy()
        olo, ohi = float(min(m.min(), 0.0)), float(max(m.max(), 0.0))
        out["macd"] = _line_mask(canvas, mpf, df, df["macd"].to_numpy(), "oscillator", olo, ohi)
        out["macd_signal"] = _line_mask(
            canvas, mpf, df, df["macd_signal"].to_numpy(), "oscillator", olo, ohi
        )
        canvas.clear()
        # mplfinance draws histograms only as an addplot of a full chart; plain bars are the same.
        canvas.axes["oscillator"].bar(
            np.arange(len(df)),
            df["macd_hist"].to_numpy(),
            width=1.0 if canvas.slots else 0.8,
            color="white",
            linewidth=0,
        )
        canvas.limits("oscillator", olo, ohi)
        out["macd_hist"] = canvas.pixels().max(axis=2) > 127
    return out


def render_tensor_mpl(
    candles: pd.DataFrame,
    spec: ChartSpec,
    end_indices: list[int] | np.ndarray,
    dpi: int = 100,
    indicators: pd.DataFrame | None = None,
) -> torch.Tensor:  # noqa: F821 - torch imported lazily
    """uint8 (B, C, H, W) frames drawn through mplfinance, in the tensor renderer's layout."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import torch

    ind = compute_indicators(candles, spec) if indicators is None else indicators
    canvas = _Canvas(spec, dpi)
    els = layout.elements(spec)

    def frame(end: int) -> np.ndarray:
        masks = _masks(canvas, _window(candles, ind, spec, end), spec)
        img = np.zeros((spec.channels, spec.height, spec.width), dtype=np.int32)
        for el in els:
            img[el.channel] += masks[el.name] * el.weight
        return np.minimum(img, 255).astype(np.uint8)

    frames = []
    for end in np.asarray(end_indices, dtype=np.int64).reshape(-1):
        cur = frame(int(end))
        if spec.diff_frame:
            prev = frame(int(end) - 1)
            cur = np.concatenate(
                [cur, ((cur.astype(np.int16) - prev.astype(np.int16)) // 2 + 128).astype(np.uint8)]
            )
        frames.append(cur)
    shape = (0, layout.spec_channels(spec), spec.height, spec.width)
    return torch.as_tensor(np.stack(frames)) if frames else torch.empty(shape, dtype=torch.uint8)
