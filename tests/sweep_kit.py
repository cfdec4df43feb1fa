"""What the sweep tests share: a tiny plan on synthetic candles, the tiny chart and budget as a
CLI spec."""

from __future__ import annotations

import json

from chartrl.account.fills import MarketRules
from chartrl.experiments.folds import purge_gap, sweep_folds
from chartrl.experiments.plan import Plan
from chartrl.testing.synthetic import synthetic_candles
from test_training import SPEC, TINY  # the tiny chart and budget of the training tests

TRAIN = {**TINY, "epochs": 1, "oracle_window": 4}
"""test_training's tiny budget at one DQN epoch, plus a short oracle window (a shorter purge gap)."""
CHART_TOML = (
    "[chart]\nwindow = 40\nheight = 32\nwidth = 48\nma_periods = [5, 10]\nbollinger_period = 10\n"
)


def _toml(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


TRAIN_TOML = "[train]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in TRAIN.items())
"""TRAIN (test_training's TINY at one epoch) as a spec's [train] table."""
SPEC_TOML = (
    'strategies = ["cnn", "gru"]\nseeds = 2\nfolds = 2\n[series]\nsynthetic = 1200\n' + TRAIN_TOML
)
"""2 strategies x 2 seeds x 2 folds on 1200 synthetic candles: 8 units."""
OPTUNA_SPEC_TOML = (
    'strategies = ["cnn"]\nseeds = 2\nfolds = 1\nsearch = "optuna"\ntrials = 3\n'
    'params = ["learning_rate=1e-4:1e-3:log"]\n[series]\nsynthetic = 900\n' + TRAIN_TOML
)
"""Optuna: 3 configurations of the cnn x 2 seeds x 1 fold on 900 synthetic candles: 6 units."""


def tiny_plan(n: int = 1200, folds: int = 2, **kw) -> tuple[Plan, object]:
    candles = synthetic_candles(n, seed=5)
    ts = candles["timestamp"]
    meta = {
        "series": {"exchange": "synthetic", "symbol": "BTC/USDT", "timeframe": "1h"},
        "data_range": {
            "from": ts.iloc[0].isoformat(),
            "until": ts.iloc[-1].isoformat(),
            "candles": n,
            "source": "synthetic(test)",
        },
    }
    base = dict(
        strategies=["cnn", "gru"],
        seeds=[1, 2],
        folds=sweep_folds(n, folds, purge_gap(SPEC.window, TRAIN["oracle_window"])),
        spec=SPEC,
        timeframe="1h",
        meta=meta,
        rules=MarketRules(),
        train=dict(TRAIN),
    )
    base.update(kw)
    return Plan(**base), candles
