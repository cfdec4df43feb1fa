"""What a backtest of a trained model says about the model's training: whether the series is one
it learnt from (else the run is a transfer: the chart is scale-free, so a model can read another
market's chart), which series it learnt from, and whether it is scored on candles it learnt from
(in-sample). Written to metrics.json and shown in report.md."""

from __future__ import annotations

from typing import Any

import pandas as pd

from chartrl.symbols import base_quote, series_name


def overlaps(trained: Any, test: tuple[str, str]) -> bool:
    """Whether a model's training range (model.json ``data_range`` or a ``training_series`` entry:
    from, until, validation_from) meets the dates ``test``; training ends where validation starts
    when that is known."""
    try:
        lo = trained.get("from")
        hi = trained.get("validation_from") or trained.get("until")
        return pd.Timestamp(lo) <= pd.Timestamp(test[1]) and pd.Timestamp(hi) >= pd.Timestamp(
            test[0]
        )
    except (AttributeError, TypeError, ValueError):
        return False


def training_range(meta: dict[str, Any], series: tuple[str, str, str] | None) -> dict | None:
    """The model's training range on ``series`` (None: it never learnt from that series). Without
    a ``series`` (a caller that does not say), the model's own ``data_range``."""
    from chartrl.train.checkpoint import training_series

    if series is None:
        return meta.get("data_range")
    for t in training_series(meta):
        if (t.get("exchange"), t.get("symbol"), t.get("timeframe")) == tuple(series):
            return t
    return None


def provenance(meta: dict[str, Any], series: tuple[str, str, str]) -> dict[str, Any]:
    """metrics.json's ``series_in_training`` and ``training_series`` (each learnt series' name and
    range) for a model ``meta`` replayed on ``series``."""
    from chartrl.train.checkpoint import series_in_training, training_series

    keys = ("name", "from", "until", "validation_from", "candles")
    return {
        "series_in_training": series_in_training(meta, *series),
        "training_series": [
            {k: t.get(k) for k in keys if t.get(k) is not None} for t in training_series(meta)
        ],
    }


def transfer_lines(metrics: dict[str, Any]) -> list[str]:
    """report.md's banner for a transfer run ([] otherwise)."""
    if metrics.get("series_in_training") is not False:
        return []
    learnt = "; ".join(
        f"{t['name']} ({str(t.get('from', '?'))[:10]} .. {str(t.get('until', '?'))[:10]})"
        for t in metrics.get("training_series") or []
    )
    return [
        f"> **Transfer:** the model never saw {metrics.get('series_name')}; it learnt from "
        f"{learnt}. These figures measure how its chart reading carries over to another market.",
        "",
    ]


def quote_of(series: tuple[str, str, str]) -> str:
    """The quote currency equity, cash, fees and turnover of a run on ``series`` are counted in."""
    return base_quote(series[1])[1]


def name_of(series: tuple[str, str, str]) -> str:
    return series_name(*series)
