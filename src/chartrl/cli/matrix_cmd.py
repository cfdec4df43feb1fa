"""``chartrl backtest --series A,B,C``: one model (or rule) replayed on several stored series,
each into its own report, summed up in a transfer matrix (backtest/matrix.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from chartrl.errors import UsageError


def transfer_matrix(
    args: argparse.Namespace,
    settings_for: Callable[[argparse.Namespace], Any],
    backtest: Callable[..., dict],
) -> int:
    """Run ``backtest`` once per ``--series`` item into ``--out/<series slug>/``, then write
    matrix.md, matrix.csv and matrix.png into ``--out``."""
    from chartrl.backtest.matrix import write_matrix
    from chartrl.symbols import parse_series, series_name
    from chartrl.symbols import series_slug as slug

    if args.exchange or args.symbol or args.timeframe:
        raise UsageError("--series names every series; drop --exchange/--symbol/--timeframe")
    if args.retrain:
        raise UsageError("--series replays one fixed model or rule; drop --retrain")
    rows: list[tuple[str, dict, Any, Any]] = []
    for exchange, symbol, timeframe in parse_series(args.series):
        args.exchange, args.symbol, args.timeframe = exchange, symbol, timeframe
        name = series_name(exchange, symbol, timeframe)
        curves: list = []
        metrics = backtest(args, settings_for(args), args.out / slug(name), curves)
        rows.append((name, metrics, *curves[0]))
    args.exchange = args.symbol = args.timeframe = None
    table = write_matrix(args.out, rows)
    print(table)
    print(
        f"written: {args.out / 'matrix.md'}, {args.out / 'matrix.csv'}, {args.out / 'matrix.png'}"
    )
    return 0
