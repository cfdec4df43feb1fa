"""Trade rate of the fee-aware optimal oracle against its per-round-trip penalty.

Hindsight after fees alone still trades on most hourly swings, which no chart can predict; the
penalty (log-return units per round trip, ``--oracle-trade-penalty``) thins the oracle's path to
the moves worth learning. For each penalty this prints the oracle's round trips per week, its
exposure (fraction of candles long) and its net log return (the penalty is a labelling device,
not a cost: it is added back), followed by the article's extrema labeller for reference. The
default penalty was chosen from this table (docs/training.md): a few round trips a week, at most
about one a day.

    .venv/bin/python benchmarks/oracle_penalty.py [--csv PATH] [--symbol BTC/USDT] [--until DATE]

Without the shared data it runs on synthetic candles and says so.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from chartrl.account.fills import MarketRules
from chartrl.strategies.oracle import (
    optimal_actions,
    optimal_values,
    oracle_labels,
    oracle_path,
    path_stats,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "Binance_BTCUSDT_1h.csv"
PENALTIES = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12)


def load(csv: Path, symbol: str) -> tuple[pd.DataFrame, str]:
    if not csv.is_file():
        from chartrl.testing.synthetic import synthetic_candles

        return synthetic_candles(20_000, seed=7), "synthetic(20000, seed=7): shared data absent"
    from chartrl.market.importer import import_csv
    from chartrl.market.store import CandleStore

    with tempfile.TemporaryDirectory() as tmp:
        store = CandleStore(tmp)
        import_csv(csv, store, "binance", symbol, "1h")
        return store.load("binance", symbol, "1h"), str(csv)


def extrema_path(close: np.ndarray, window: int = 24) -> np.ndarray:
    """The position path the extrema labels give when followed (buy at a minimum, sell at a max)."""
    labels = oracle_labels(close, window)
    return oracle_path(np.stack([labels, labels], axis=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=SHARED)
    ap.add_argument("--symbol", default="BTC/USDT")
    ap.add_argument("--until", help="use candles up to this date only (e.g. a training cut)")
    args = ap.parse_args()
    from chartrl.logs import configure_logging

    configure_logging("error", "console", stream=sys.stderr)  # the importer's repair notes
    candles, source = load(args.csv, args.symbol)
    if args.until:
        candles = candles[candles["timestamp"] <= pd.Timestamp(args.until, tz="UTC")]
    o = candles["open"].to_numpy(np.float64)
    c = candles["close"].to_numpy(np.float64)
    rules = MarketRules()
    print(
        f"{source}: {len(c):,} hourly candles {candles['timestamp'].iloc[0]:%Y-%m-%d} .. "
        f"{candles['timestamp'].iloc[-1]:%Y-%m-%d}; fee {rules.fee}, slippage {rules.slippage_bps} bps"
    )
    print(f"buy and hold log return {np.log(c[-1] / o[0]):.2f}")
    print("| penalty | round trips / week | round trips / day | exposure | net log return |")
    print("|---|---|---|---|---|")
    for pen in PENALTIES:
        q = optimal_values(o, c, rules.fee, rules.slippage_bps, pen)
        pos = oracle_path(optimal_actions(q))
        st = path_stats(o, c, pos)
        net = q[0, 0].max() + pen * st["round_trips"]  # the penalty added back: a real return
        print(
            f"| {pen:g} | {st['round_trips_per_week']:.2f} | {st['round_trips_per_week'] / 7:.2f} "
            f"| {st['exposure']:.2f} | {net:.2f} |"
        )
    st = path_stats(o, c, extrema_path(c))
    print(
        f"| extrema (window 24) | {st['round_trips_per_week']:.2f} | "
        f"{st['round_trips_per_week'] / 7:.2f} | {st['exposure']:.2f} | n/a |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
