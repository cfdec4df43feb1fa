"""Q values of a trained model by position: does the chart or only the position decide?

For the first ``--charts`` charts from ``--from`` of a stored series, prints the mean and the spread
over charts of Q(hold, buy, sell) with the position features flat (0, 0) and long with an
unrealised log return of 0, -1 % and +1 %, and how often each action is the greedy one (the best
valid action: a buy while long or a sell while flat does nothing, so it is never chosen).

    .venv/bin/python benchmarks/q_by_position.py --model DIR --data-dir D --symbol ETC/BTC \
        --from 2020-06-01 [--charts 64]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--symbol", required=True)
    ap.add_argument("--from", dest="start", required=True)
    ap.add_argument("--charts", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from chartrl.chart.spec import ChartSpec
    from chartrl.market.store import CandleStore
    from chartrl.strategies.base import greedy
    from chartrl.train.checkpoint import load_model
    from chartrl.train.env import prepare_data

    policy, meta = load_model(args.model)
    spec = meta["chart_spec"]
    spec = ChartSpec(**spec) if isinstance(spec, dict) else spec
    c = CandleStore(args.data_dir).load("binance", args.symbol, "1h")
    c = c[c.timestamp >= args.start].reset_index(drop=True)
    data = prepare_data(c, spec, "1h", 0.0)
    idx = data.train[: args.charts]
    with torch.no_grad():
        feats = policy.features(data.frames.get(idx))
        for pos in ([0.0, 0.0], [1.0, 0.0], [1.0, -0.01], [1.0, 0.01]):
            where = torch.tensor([pos] * len(idx))
            q, _ = policy.head(feats, where)
            print(
                f"position {pos}: Q hold/buy/sell mean {q.mean(0).numpy().round(3)} "
                f"std over charts {q.std(0).numpy().round(3)} "
                f"greedy counts {np.bincount(greedy(q, where).numpy(), minlength=3)}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
