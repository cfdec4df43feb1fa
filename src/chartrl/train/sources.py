"""The stored series a multi-series run learns from (``chartrl train --series A,B``): their
candles, fill models and what model.json records of each (``training_series``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from chartrl.errors import UsageError
from chartrl.symbols import parse_series, series_name


def parse_weights(text: str | None, count: int) -> list[float] | None:
    """``--series-weights 2,1``: one positive number per series, or None (by their sizes)."""
    if text is None:
        return None
    try:
        weights = [float(x) for x in text.split(",")]
    except ValueError:
        weights = []
    if len(weights) != count or any(not w > 0 for w in weights):
        raise UsageError(
            f"--series-weights {text!r}: give {count} positive numbers, one per --series item, "
            "e.g. 2,1"
        )
    return weights


def load_series(
    text: str,
    weights_text: str | None,
    model_timeframe: str | None,
    settings_for: Callable[[str, str, str], Any],
    start: Any,
    end: Any,
) -> tuple[list[tuple[str, Any]], list[Any], list[dict[str, Any]], str]:
    """The series of ``--series`` from the candle store: ``(name, candles)`` pairs, their fill
    models, model.json's ``training_series`` entries (range, candles, weight, fills) and the
    model's timeframe (``model_timeframe``, else the first series'). A series of another
    timeframe is refused, naming it (train/series.py ``check_timeframes``)."""
    from chartrl.market.markets import fill_parameters, market_rules
    from chartrl.market.store import CandleStore
    from chartrl.train.series import check_timeframes

    ids = parse_series(text)
    weights = parse_weights(weights_text, len(ids))
    timeframe = model_timeframe or ids[0][2]
    check_timeframes([series_name(*i) for i in ids], [i[2] for i in ids], timeframe)
    series, rules, infos = [], [], []
    for k, (exchange, symbol, tf) in enumerate(ids):
        s = settings_for(exchange, symbol, tf)
        candles = CandleStore(s.data_dir).load(exchange, symbol, tf, start, end)
        r, source = market_rules(s)
        name = series_name(exchange, symbol, tf)
        series.append((name, candles))
        rules.append(r)
        infos.append(
            {
                "name": name,
                "exchange": exchange,
                "symbol": symbol,
                "timeframe": tf,
                "weight": weights[k] if weights else None,
                "fills": fill_parameters(r, source),
            }
        )
    return series, rules, infos, timeframe


def series_meta(
    spec: Any,
    source: str,
    series: Sequence[tuple[str, Any]],
    infos: list[dict[str, Any]],
    date_from: str | None,
    date_until: str | None,
) -> dict[str, Any]:
    """The checkpoint meta of a multi-series run. The first series stands for the model where
    one series is expected (``series``, ``data_range``: resume, promotion); ``training_series``
    lists them all, ``series_range`` keeps the --from/--until asked of every one (resume)."""
    first, candles = infos[0], series[0][1]
    return {
        "chart_spec": spec,
        "series": {k: first[k] for k in ("exchange", "symbol", "timeframe")},
        "data_range": {
            "from": candles["timestamp"].iloc[0].isoformat(),
            "until": candles["timestamp"].iloc[-1].isoformat(),
            "candles": len(candles),
            "source": source,
        },
        "training_series": infos,
        "series_range": {"from": date_from, "until": date_until},
    }


def prepare_many(
    items: Sequence[tuple[str, Any, Any]],
    spec: Any,
    timeframe: str,
    cfg: Any,
    weights_text: str | None,
    meta: dict[str, Any],
) -> Any:
    """``prepare_series`` of ``(name, candles, rules)`` items; records each series' split in
    ``meta`` (``training_series``: from, until, candles, validation_from)."""
    from chartrl.train.series import prepare_series

    data = prepare_series(
        [(name, c) for name, c, _ in items],
        spec,
        timeframe,
        cfg.validation_fraction,
        rules=[r for _, _, r in items],
        weights=parse_weights(weights_text, len(items)),
    )
    meta["training_series"] = [
        {**i, **p.info} for i, p in zip(meta["training_series"], data.series, strict=True)
    ]
    meta["data_range"]["validation_from"] = meta["training_series"][0]["validation_from"]
    return data
