"""The report's pictures: equity vs buy-and-hold with drawdown underneath, and trades on a chart.

Matplotlib runs on the Agg backend (files only, works without a display).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chartrl.backtest.metrics import drawdown_series
from chartrl.backtest.runner import BacktestResult

TRADES_WINDOW = 200  # candles on the trades picture: enough to see patterns, few enough to read


def _pyplot():
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(
        logging.ERROR
    )  # font fallback notices are not the user's business
    import matplotlib.pyplot as plt

    return plt


def _naive(ts: pd.Series) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(ts).tz_convert("UTC").tz_localize(None)


def plot_equity(
    path: Path,
    curves: Sequence[tuple[str, pd.Series, np.ndarray]],
    title: str,
    boundaries: Sequence[pd.Timestamp] = (),
) -> None:
    """``curves``: (label, timestamps, equity) drawn normalised to 1 at their start; the first is
    the strategy. Drawdowns of each go underneath; ``boundaries`` mark walk-forward folds."""
    plt = _pyplot()
    fig, (ax, axd) = plt.subplots(
        2,
        1,
        figsize=(11, 6.5),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1.2]},
        constrained_layout=True,
    )
    colors = ["tab:blue", "tab:gray", "tab:orange", "tab:green"]
    for i, (label, ts, eq) in enumerate(curves):
        x = _naive(ts)
        eq = np.asarray(eq, dtype=np.float64)
        ax.plot(
            x, eq / eq[0], label=label, color=colors[i % len(colors)], lw=1.4 if i == 0 else 1.0
        )
        dd = drawdown_series(eq) * 100
        if i == 0:  # the strategy's drawdown filled, the others as lines, so both stay readable
            axd.fill_between(x, dd, 0, color=colors[0], alpha=0.4, lw=0, label=label)
        else:
            axd.plot(x, dd, color=colors[i % len(colors)], lw=0.8, label=label)
    for b in boundaries:
        for a in (ax, axd):
            a.axvline(
                pd.Timestamp(b).tz_convert("UTC").tz_localize(None), color="k", ls=":", lw=0.8
            )
    ax.set_yscale("log")
    ax.set_ylabel("equity (start = 1, log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    axd.set_ylabel("drawdown %")
    axd.legend(loc="lower left", fontsize="small")
    axd.grid(True, alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def trades_window(result: BacktestResult, size: int = TRADES_WINDOW) -> tuple[int, int]:
    """[lo, hi) candle indices of the picture: the last ``size`` candles up to a few after the last fill."""
    n = len(result.candles)
    end = n if len(result.fill_index) == 0 else min(n, int(result.fill_index[-1]) + 10)
    return max(0, end - size), end


def plot_trades(path: Path, result: BacktestResult, title: str, size: int = TRADES_WINDOW) -> None:
    """Candles of a readable period with buy (green ^ under the low) and sell (red v over the high)
    markers on the candle whose open filled them."""
    _pyplot()
    import mplfinance as mpf

    lo, hi = trades_window(result, size)
    part = result.candles.iloc[lo:hi]
    df = pd.DataFrame(
        {
            "Open": part["open"].to_numpy(),
            "High": part["high"].to_numpy(),
            "Low": part["low"].to_numpy(),
            "Close": part["close"].to_numpy(),
            "Volume": part["volume"].to_numpy(),
        },
        index=_naive(part["timestamp"]),
    )
    buys = np.full(len(df), np.nan)
    sells = np.full(len(df), np.nan)
    pad = float((df["High"] - df["Low"]).median()) * 0.8
    for f, i in zip(result.fills, result.fill_index, strict=True):
        j = int(i) - lo
        if 0 <= j < len(df):
            if f.side == "buy":
                buys[j] = df["Low"].iloc[j] - pad
            else:
                sells[j] = df["High"].iloc[j] + pad
    plots = []
    if np.isfinite(buys).any():
        plots.append(
            mpf.make_addplot(buys, type="scatter", marker="^", markersize=70, color="green")
        )
    if np.isfinite(sells).any():
        plots.append(
            mpf.make_addplot(sells, type="scatter", marker="v", markersize=70, color="red")
        )
    kwargs = {"addplot": plots} if plots else {}
    span = (
        f"{df.index[0]:%Y-%m-%d %H:%M} to {df.index[-1]:%Y-%m-%d %H:%M} UTC"
        if len(df)
        else "no candles"
    )
    fig, _ = mpf.plot(
        df,
        type="candle",
        style="yahoo",
        volume=True,
        figsize=(12, 6.5),
        returnfig=True,
        ylabel="price",
        datetime_format="%m-%d %H:%M",
        xrotation=0,
        warn_too_much_data=len(df) + 1,
        **kwargs,
    )
    fig.suptitle(f"{title}, {span}: buy ▲ / sell ▼ at the fill candle", y=0.98)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)


def plot_panels(
    path: Path,
    panels: Sequence[tuple[str, Sequence[tuple[str, pd.Series, np.ndarray]]]],
    title: str,
) -> None:
    """One panel per ``(panel title, curves)``, stacked; each curve (label, timestamps, equity) is
    drawn normalised to 1 at its start on a log scale, the first as the strategy."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(11, 2.6 * len(panels) + 0.8),
        squeeze=False,
        constrained_layout=True,
    )
    colors = ["tab:blue", "tab:gray", "tab:orange", "tab:green"]
    for ax, (name, curves) in zip(axes[:, 0], panels, strict=True):
        for i, (label, ts, eq) in enumerate(curves):
            eq = np.asarray(eq, dtype=np.float64)
            ax.plot(
                _naive(ts), eq / eq[0], label=label, color=colors[i % 4], lw=1.3 if i == 0 else 1.0
            )
        ax.set_yscale("log")
        ax.set_title(name, fontsize="medium")
        ax.set_ylabel("equity (start = 1)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
