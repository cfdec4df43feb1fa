"""What the sweep tests share: a tiny plan on synthetic candles, the tiny chart and budget as a
CLI spec."""

from __future__ import annotations

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
SPEC_TOML = """strategies = ["cnn", "gru"]
seeds = 2
folds = 2
[series]
synthetic = 1200
[train]
epochs = 1
imitation_epochs = 1
num_envs = 2
learning_starts = 16
batch_size = 2
seq_len = 3
burn_in = 2
train_frequency = 2
max_steps_per_epoch = 12
target_network_frequency = 3
buffer_size = 400
oracle_window = 4
policy_kwargs = {feat_dim = 16}
"""


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
