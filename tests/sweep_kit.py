"""What the sweep tests share: a tiny plan on synthetic candles, the tiny chart and budget as a
CLI spec, and the report placeholder used until h-stats' report module is merged."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

from chartrl.account.fills import MarketRules
from chartrl.chart.spec import ChartSpec
from chartrl.experiments.folds import purge_gap, sweep_folds
from chartrl.experiments.plan import Plan
from chartrl.testing.synthetic import synthetic_candles

SPEC = ChartSpec(window=40, height=32, width=48, ma_periods=(5, 10), bollinger_period=10)
TRAIN = dict(
    epochs=1,
    imitation_epochs=1,
    num_envs=2,
    learning_starts=16,
    batch_size=2,
    seq_len=3,
    burn_in=2,
    train_frequency=2,
    max_steps_per_epoch=12,
    target_network_frequency=3,
    buffer_size=400,
    oracle_window=4,
    policy_kwargs={"feat_dim": 16},
)
"""test_training.tiny_cfg's budget, plus a short oracle window (a shorter purge gap)."""
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


REPORT_PLACEHOLDER = """
import importlib.util, sys, types
from pathlib import Path
# TODO(merge with h-stats): drop this placeholder; chartrl.experiments.report is h-stats' module.
if importlib.util.find_spec("chartrl.experiments.report") is None:
    fake = types.ModuleType("chartrl.experiments.report")
    def write_report(out, *, reference="cnn"):
        p = Path(out) / "report.md"
        p.write_text("placeholder until h-stats' report lands\\n")
        return p
    fake.write_report = write_report
    sys.modules["chartrl.experiments.report"] = fake
"""
"""Installs a stand-in ``write_report`` only while the real module is absent (this branch), so
the sweep's call to it is exercised and, after the merge, the real report is what runs."""


def install_report_placeholder(monkeypatch) -> None:
    """The same stand-in, in this process, undone after the test (monkeypatch)."""
    if importlib.util.find_spec("chartrl.experiments.report") is not None:
        return
    fake = types.ModuleType("chartrl.experiments.report")

    def write_report(out, *, reference="cnn"):
        p = Path(out) / "report.md"
        p.write_text("placeholder until h-stats' report lands\n")
        return p

    fake.write_report = write_report
    monkeypatch.setitem(sys.modules, "chartrl.experiments.report", fake)
