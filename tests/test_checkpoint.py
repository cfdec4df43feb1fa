"""Checkpoints: round trip, spec/series mismatch refused, corrupt files refused with clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from chartrl.chart.spec import ChartSpec
from chartrl.errors import CheckpointError
from chartrl.strategies.registry import build_policy
from chartrl.train.checkpoint import META_FILE, MODEL_FILE, load_model, read_meta, save_model

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
    d = save_model(
        tmp_path / "m", p, {"chart_spec": SPEC, "series": SERIES, "metrics": {"sharpe": 1.5}}
    )
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
    torch.testing.assert_close(
        loaded.state_dict()["q.net.weight"], other.state_dict()["q.net.weight"]
    )
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


def _refusal(call) -> str:  # noqa: ANN001
    with pytest.raises(CheckpointError) as err:
        call()
    return str(err.value)


def test_damaged_files_get_our_one_line_advice_not_torchs(tmp_path: Path) -> None:
    """What file, what is wrong, what to do; never torch's internals or its weights_only=False hint
    (which would have the operator run code from a damaged or foreign file)."""
    import argparse
    import hashlib
    import io

    from chartrl.train.checkpoint import TRAIN_STATE_FILE, load_train_state

    d, _ = _saved(tmp_path)
    buf = io.BytesIO()
    torch.save({"weights": argparse.Namespace(x=1)}, buf)  # a pickle the safe loader refuses
    (d / MODEL_FILE).write_bytes(buf.getvalue())
    meta = json.loads((d / META_FILE).read_text())
    meta["weights_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (d / META_FILE).write_text(json.dumps(meta))
    torch.save({"counters": {}}, d / TRAIN_STATE_FILE)
    raw = (d / TRAIN_STATE_FILE).read_bytes()
    (d / TRAIN_STATE_FILE).write_bytes(raw[: len(raw) // 2])
    messages = [_refusal(lambda: load_model(d)), _refusal(lambda: load_train_state(d))]
    for msg, name in zip(messages, (MODEL_FILE, TRAIN_STATE_FILE), strict=True):
        assert not re.search(r"weights[ _]only|zip|miniz", msg, re.IGNORECASE) and "\n" not in msg
        assert (
            str(d / name) in msg and ("retrain" in msg or "train anew" in msg) and "backup" in msg
        )


def test_weights_of_another_shape_refused_clearly(tmp_path: Path) -> None:
    import hashlib

    d, _ = _saved(tmp_path)
    torch.save(
        build_policy("cnnrnn", SPEC, hidden_size=8).state_dict(), d / MODEL_FILE
    )  # model.json says 16
    meta = json.loads((d / META_FILE).read_text())
    meta["weights_sha256"] = hashlib.sha256((d / MODEL_FILE).read_bytes()).hexdigest()
    (d / META_FILE).write_text(json.dumps(meta))
    msg = _refusal(lambda: load_model(d))
    assert (
        "do not fit the 'cnnrnn' policy" in msg and "size mismatch" not in msg and "\n" not in msg
    )


class Killed(BaseException):
    """The process dies here (BaseException: no ``except Exception`` of ours catches it)."""


def _kill_at(monkeypatch, n: int) -> None:
    """Die at the ``n``-th rename or fsync from now: every step of a write at which a kill
    leaves a different state on disk."""
    import os

    calls = {"n": 0}
    real = {"replace": os.replace, "fsync": os.fsync}

    def step(name):
        def do(*args):
            calls["n"] += 1
            if calls["n"] == n:
                raise Killed
            return real[name](*args)

        return do

    for name in real:
        monkeypatch.setattr(os, name, step(name))


def test_a_rewrite_killed_at_any_step_settles_to_one_whole_checkpoint(
    tmp_path: Path, monkeypatch
) -> None:
    """A run's checkpoint rewrite (weights, training state, model.json) killed at each of its
    steps in turn: after ``settle`` the directory loads, and its weights, training state and
    model.json are all the old set or all the new one, never a mix (a new model.pt beside an old
    model.json and training state is what a resumed run could not load)."""
    from chartrl.train.checkpoint import PENDING_DIR, settle

    def write(d: Path, name: str, seed: int) -> None:
        torch.manual_seed(seed)
        meta = {"chart_spec": SPEC, "series": SERIES, "metrics": {"set": name}}
        save_model(d, build_policy("cnn", SPEC), meta, {"train_state.pt": name.encode() * 5000})

    seen, step = set(), 1
    while True:
        d = tmp_path / f"m{step}"
        write(d, "old", 1)
        _kill_at(monkeypatch, step)
        try:
            write(d, "new", 2)
            killed = False
        except Killed:
            killed = True
        monkeypatch.undo()
        settle(d)
        _, meta = load_model(d)  # weights and model.json agree (load checks the hash)
        which = meta["metrics"]["set"]
        assert (d / "train_state.pt").read_bytes() == which.encode() * 5000, (step, which)
        assert sorted(p.name for p in d.iterdir()) == [META_FILE, MODEL_FILE, "train_state.pt"]
        assert not (d / PENDING_DIR).exists()
        seen.add(which)
        if not killed:
            break
        step += 1
    assert seen == {"old", "new"} and step > 6, (seen, step)  # both outcomes, every step tried
