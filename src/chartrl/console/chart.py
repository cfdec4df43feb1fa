"""The picture the model decided on at the last tick, and the candles around it, for the dashboard.

The daemon does not store its chart tensors; it does not need to. The tensor renderer is a pure
function of the candles and the ChartSpec, so rendering the stored candles up to the last decided
candle with the champion's ChartSpec gives the same tensor the policy saw (the one the backtest
would see too: one pipeline).
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from chartrl.chart.spec import ChartSpec
from chartrl.config.settings import Settings
from chartrl.daemon.model import HISTORY_MARGIN
from chartrl.errors import ChartrlError, DataError
from chartrl.market.store import CandleStore
from chartrl.timeframe import shift_open_ms

SCALE = 6
"""Upscaling of the tensor (nearest neighbour): a 64 px chart becomes readable, pixels stay visible."""


def model_spec(settings: Settings) -> ChartSpec:
    """The champion's ChartSpec (what it was trained on and decides with), else the config's."""
    from chartrl.train.checkpoint import read_meta

    try:
        return ChartSpec(**read_meta(settings.model_dir)["chart_spec"])
    except (ChartrlError, KeyError, TypeError, ValueError):
        return settings.chart


def latest_chart_png(settings: Settings, symbol: str, candle_ms: int, timeframe: str) -> bytes:
    """PNG of the chart tensor ending at ``candle_ms`` (DataError when it cannot be rendered)."""
    from PIL import Image

    from chartrl.chart.tensor_render import TensorRenderer
    from chartrl.cli.chart_cmd import tensor_image

    spec = model_spec(settings)
    first = shift_open_ms(candle_ms, timeframe, -(spec.window + HISTORY_MARGIN))
    candles = CandleStore(settings.data_dir).load(
        settings.exchange.id,
        symbol,
        timeframe,
        start=pd.Timestamp(first, unit="ms", tz="UTC"),
        end=pd.Timestamp(candle_ms, unit="ms", tz="UTC"),
    )
    renderer = TensorRenderer(candles, spec, "cpu")
    last = len(candles) - 1
    if last not in set(int(i) for i in renderer.valid_indices):
        raise DataError(
            f"the stored candles up to {pd.Timestamp(candle_ms, unit='ms', tz='UTC')} do not make a "
            f"complete {spec.window}-candle chart"
        )
    img = tensor_image(renderer.render([last])[0], spec, SCALE)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def recent_candles(settings: Settings, symbol: str, timeframe: str, limit: int) -> dict[str, Any]:
    """The last ``limit`` stored candles as columns (time, open, high, low, close, volume)."""
    df = CandleStore(settings.data_dir).load(settings.exchange.id, symbol, timeframe)
    df = df.iloc[-limit:]
    return {
        "symbol": symbol,
        "timeframe": timeframe,
        "time": [t.isoformat() for t in df["timestamp"]],
        **{k: df[k].astype(float).tolist() for k in ("open", "high", "low", "close", "volume")},
    }
