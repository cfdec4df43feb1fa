"""Resumed runs and nightly fine-tunes refill their replay before they learn from it.

``--resume`` and the nightly retrain continue a run's weights, optimiser and counters, but the
replay memory is not saved: it starts empty. The first update must wait until this run's memory
holds ``learning_starts`` transitions, not until the restored counter says so (which it always
does), or the first updates sample a few transitions over and over.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chartrl.account.fills import MarketRules
from chartrl.chart.spec import ChartSpec
from chartrl.testing.synthetic import synthetic_candles
from chartrl.train.checkpoint import read_meta
from chartrl.train.dqn import TrainConfig, train
from chartrl.train.env import prepare_data
from chartrl.train.history import read_history
from chartrl.train.replay import SequenceReplay
from test_training import tiny_cfg

SPEC = ChartSpec(window=40, height=32, width=48, ma_periods=(5, 10), bollinger_period=10)
META = {
    "chart_spec": SPEC,
    "series": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"},
}
STARTS = 16  # learning_starts: 8 steps of 2 lanes; each epoch makes 12 steps


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def sampled(monkeypatch) -> list[int]:
    """Every replay sample of the test records how many transitions its memory held."""
    seen: list[int] = []
    original = SequenceReplay.sample

    def sample(self, batch, length):
        seen.append(len(self))
        return original(self, batch, length)

    monkeypatch.setattr(SequenceReplay, "sample", sample)
    return seen


def _cfg(**kw) -> TrainConfig:
    base = dict(
        epochs=1,
        stages=("dqn",),
        imitation_epochs=TrainConfig.imitation_epochs,
        learning_starts=STARTS,
        target_network_frequency=TrainConfig.target_network_frequency,
        policy_kwargs={"feat_dim": 16, "widths": (4, 8)},
    )
    return tiny_cfg(**(base | kw))


@pytest.fixture(scope="module")
def data():
    return prepare_data(synthetic_candles(400, seed=5), SPEC, "1h", validation_fraction=0.2)


def _assert_refilled_first(seen: list[int], updates: int) -> None:
    assert updates > 0 and len(seen) == updates, (seen, updates)  # it did learn, after refilling
    assert min(seen) >= STARTS, f"an update sampled a replay of {min(seen)} < {STARTS} transitions"


def test_resumed_run_waits_for_its_own_replay(data, tmp_path: Path, sampled) -> None:
    train("cnn", data, _cfg(), tmp_path / "m", META, progress=False)
    first = read_meta(tmp_path / "m")["counters"]
    assert first["transitions"] >= STARTS and min(sampled) >= STARTS  # the fresh run, as before
    sampled.clear()
    train("cnn", data, _cfg(epochs=2), tmp_path / "m", META, progress=False, resume=True)
    done = read_meta(tmp_path / "m")["counters"]
    _assert_refilled_first(sampled, done["updates"] - first["updates"])


def test_cli_resume_waits_for_its_own_replay(tmp_path: Path, capsys, sampled) -> None:
    from chartrl.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[chart]\nwindow = 40\nheight = 32\nwidth = 48\nma_periods = [5, 10]\nbollinger_period = 10\n"
    )
    m = tmp_path / "m"

    def cli(*argv: str) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["-c", str(cfg), "--log-level", "warning", "train", "--no-progress", *argv])
        assert int(exc.value.code or 0) == 0, capsys.readouterr().err

    # train_frequency 16: updates at steps 0, 16 and 32, of which a refilling run skips step 0
    fast = ("--num-envs", "2", "--learning-starts", str(STARTS), "--max-steps-per-epoch", "40")
    cli(
        "--strategy",
        "cnn",
        "--synthetic",
        "400",
        "--stages",
        "dqn",
        "--epochs",
        "1",
        "--out",
        str(m),
        *fast,
    )
    first = read_meta(m)["counters"]
    sampled.clear()
    cli("--resume", str(m), "--epochs", "2")
    done = read_meta(m)["counters"]
    assert done["dqn_epochs"] == 2
    _assert_refilled_first(sampled, done["updates"] - first["updates"])


def test_nightly_fine_tune_waits_for_its_own_replay(data, tmp_path: Path, sampled) -> None:
    from chartrl.config.settings import Settings
    from chartrl.daemon.retrain import fine_tune

    champion = tmp_path / "champion"
    train("cnn", data, _cfg(), champion, META, progress=False)
    before = read_meta(champion)["counters"]
    sampled.clear()
    candles = synthetic_candles(400, seed=6)
    s = Settings(data={"dir": tmp_path / "data"}, market={"timeframe": "1h"})
    meta = fine_tune(
        champion,
        tmp_path / "challenger",
        candles,
        s,
        rules=MarketRules(),
        rules_source="test",
        epochs=1,
        max_steps=12,
    )
    assert meta["counters"]["dqn_epochs"] == before["dqn_epochs"] + 1  # it continued the champion
    _assert_refilled_first(sampled, meta["counters"]["updates"] - before["updates"])


def test_a_run_killed_inside_its_checkpoint_write_resumes(data, tmp_path: Path, monkeypatch):
    """Killed after the epoch's new model.pt is in place but before its model.json (SIGKILL of a
    sweep driver's workers, a power cut): --resume completes the write and carries on from that
    epoch, instead of refusing a model.pt whose hash model.json does not know."""
    import os

    m = tmp_path / "m"
    train("cnn", data, _cfg(), m, META, progress=False)
    real = os.replace

    def replace(src, dst):
        if Path(dst) == m / "model.json":
            assert read_meta(m)["counters"]["dqn_epochs"] == 1  # model.json: still epoch 1
            raise KeyboardInterrupt  # dies here
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        train("cnn", data, _cfg(epochs=2), m, META, progress=False, resume=True)
    monkeypatch.setattr(os, "replace", real)
    train("cnn", data, _cfg(epochs=3), m, META, progress=False, resume=True)
    meta = read_meta(m)
    assert meta["counters"]["dqn_epochs"] == 3
    rows = [r for r in read_history(m) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
