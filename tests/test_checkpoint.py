"""Checkpoints: round trip, spec/series mismatch refused, corrupt files refused with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chartrl.backtest.checkpoint import META_FILE, MODEL_FILE, load_model, read_meta, save_model
from chartrl.chart.spec import ChartSpec
from chartrl.errors import CheckpointError
from chartrl.strategies.registry import build_policy

SPEC = ChartSpec(window=40, height=32, width=48, ma_periods=(5, 10), bollinger_period=10)
SERIES = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors gain nothing from threads, and on the shared 2-core machine spinning OpenMP
    threads make each op 10x slower; one thread keeps these tests fast and deterministic."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



def _saved(tmp_path: Path, name: str = "cnnrnn") -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(3)
    p = build_policy(name, SPEC, hidden_size=16).eval()
    d = save_model(tmp_path / "m", p, {"chart_spec": SPEC, "series": SERIES, "metrics": {"sharpe": 1.5}})
    return d, p


def test_round_trip_same_outputs_and_meta(tmp_path: Path) -> None:
    d, p = _saved(tmp_path)
    loaded, meta = load_model(d, expect_spec=SPEC, expect_series=("binance", "BTC/USDT", "1h"))
    x, pos = torch.randint(0, 256, (2, 3, 3, 32, 48), dtype=torch.uint8), torch.rand(2, 3, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, pos)[0], p(x, pos)[0])
    assert not loaded.training
    assert meta["strategy"] == "cnnrnn" and meta["policy_config"]["hidden_size"] == 16
    assert ChartSpec(**meta["chart_spec"]) == SPEC and meta["metrics"] == {"sharpe": 1.5}
    assert "rsi14" in meta["indicators"] and meta["version"]
    # the weights are a plain state_dict that torch's safe loader accepts
    assert set(torch.load(d / MODEL_FILE, weights_only=True)) == set(p.state_dict())
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp leftovers


def test_save_over_existing_dir_replaces(tmp_path: Path) -> None:
    d, _ = _saved(tmp_path)
    torch.manual_seed(9)
    other = build_policy("cnn", SPEC)
    save_model(d, other, {"chart_spec": SPEC, "series": SERIES})
    loaded, meta = load_model(d)
    assert meta["strategy"] == "cnn"
    torch.testing.assert_close(loaded.state_dict()["q.net.0.weight"], other.state_dict()["q.net.0.weight"])
    assert sorted(f.name for f in d.iterdir()) == [META_FILE, MODEL_FILE]


def test_spec_mismatch_refused_field_by_field(tmp_path: Path) -> None:
    d, _ = _saved(tmp_path)
    other = SPEC.model_copy(update={"window": 60, "oscillator": "macd"})
    with pytest.raises(CheckpointError) as err:
        load_model(d, expect_spec=other)
    msg = str(err.value)
    assert "window: 40 != 60" in msg and "oscillator: 'rsi' != 'macd'" in msg and "\n" not in msg


def test_series_mismatch_refused(tmp_path: Path) -> None:
    d, _ = _saved(tmp_path)
    with pytest.raises(CheckpointError, match="timeframe: '1h' != '4h'"):
        load_model(d, expect_series=("binance", "BTC/USDT", "4h"))


def test_truncated_weights_refused(tmp_path: Path) -> None:
    d, _ = _saved(tmp_path)
    raw = (d / MODEL_FILE).read_bytes()
    (d / MODEL_FILE).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"corrupt/truncated checkpoint .*model\.pt"):
        load_model(d)


def test_garbage_weights_with_matching_hash_refused(tmp_path: Path) -> None:
    """A model.pt that is not a state_dict (hash updated to match) still gets the clear error."""
    import hashlib

    d, _ = _saved(tmp_path)
    (d / MODEL_FILE).write_bytes(b"not a torch file")
    meta = json.loads((d / META_FILE).read_text())
    meta["weights_sha256"] = hashlib.sha256(b"not a torch file").hexdigest()
    (d / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="corrupt/truncated checkpoint"):
        load_model(d)


def test_truncated_json_refused(tmp_path: Path) -> None:
    d, _ = _saved(tmp_path)
    text = (d / META_FILE).read_text()
    (d / META_FILE).write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=r"corrupt/truncated checkpoint .*model\.json"):
        read_meta(d)


def test_missing_files_not_a_model_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a chartrl model dir"):
        load_model(tmp_path / "empty")
    d, _ = _saved(tmp_path)
    (d / META_FILE).unlink()
    with pytest.raises(CheckpointError, match="model.json missing"):
        load_model(d)
