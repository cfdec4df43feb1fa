"""Model checkpoints: ``DIR/model.pt`` (state_dict) + ``DIR/model.json`` (what the weights mean).

``model.json`` carries the strategy, the policy's constructor config, the ChartSpec, the indicator
set, exchange/symbol/timeframe, the data range, the hyperparameters, the final metrics, the package
version and the SHA-256 of ``model.pt``. Loading refuses a model whose spec or series differs from
what the caller expects (invariant 3) and a ``model.pt`` that does not match its ``model.json``.

Writes are atomic: a new directory is built under a temporary name and renamed into place. An
existing directory (a run's checkpoint, rewritten every epoch) gets the new set of files staged in
``DIR/.next`` first, ``model.json`` last (its presence there marks the set complete), then moved
into place one by one, ``model.json`` last: a reader sees the old set, or a new model.pt whose
hash mismatch it reports as a checkpoint being replaced. A writer killed on the way (SIGKILL, a
power cut) leaves either an incomplete stage, which ``settle`` drops (the old set is intact), or
a complete one, which ``settle`` finishes moving; the trainer settles before it resumes, so a run
killed at any moment continues from one consistent epoch, never a new model.pt beside an old
model.json and training state.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chartrl.atomic import atomic_write, fsync_dir
from chartrl.chart.spec import ChartSpec
from chartrl.errors import CheckpointError
from chartrl.logs import get_logger

log = get_logger(__name__)

MODEL_FILE = "model.pt"
META_FILE = "model.json"
TRAIN_STATE_FILE = "train_state.pt"
BEST_DIR = "best"
"""Beside the last network (``DIR/model.pt``, what --resume continues), the best one on validation
(``DIR/best/``, a model dir of its own: ``chartrl backtest --model DIR/best``)."""
PENDING_DIR = ".next"
"""Where a rewrite of an existing model directory stages its files (see the module docstring)."""


def spec_indicators(spec: ChartSpec) -> list[str]:
    """The indicator set a spec draws, as names (stored for humans; the spec is authoritative)."""
    out = [f"sma{p}" for p in spec.ma_periods]
    if spec.bollinger_period:
        out.append(f"bollinger{spec.bollinger_period},{spec.bollinger_std:g}")
    if spec.volume:
        out.append("volume")
    if spec.oscillator == "rsi":
        out.append(f"rsi{spec.rsi_period}")
    elif spec.oscillator == "macd":
        out.append("macd12,26,9")
    return out


def _atomic_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def _jsonable(value: Any) -> Any:
    if isinstance(value, ChartSpec):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def save_model(
    dir: Path | str,
    policy: torch.nn.Module,
    meta: dict[str, Any],
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write ``policy``'s weights and ``meta`` (must hold ``chart_spec`` and ``series``) to ``dir``."""
    from chartrl import __version__

    dir = Path(dir)
    if "chart_spec" not in meta or "series" not in meta:
        raise ValueError(
            "checkpoint meta needs 'chart_spec' and 'series' (exchange, symbol, timeframe)"
        )
    module = getattr(policy, "module", policy)  # unwrap DistributedDataParallel
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buf)
    weights = buf.getvalue()
    spec = (
        meta["chart_spec"]
        if isinstance(meta["chart_spec"], ChartSpec)
        else ChartSpec(**meta["chart_spec"])
    )
    full = {
        "format": 1,
        "strategy": getattr(module, "name", meta.get("strategy")),
        "policy_config": getattr(module, "config", {}),
        "indicators": spec_indicators(spec),
        **meta,
        "chart_spec": spec,
        "version": __version__,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }
    text = json.dumps(_jsonable(full), indent=2, sort_keys=False).encode()
    files = {MODEL_FILE: weights, **(extra_files or {})}
    if not dir.exists():
        dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dir.name}.", dir=dir.parent))
        try:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
            (tmp / META_FILE).write_bytes(text)
            os.replace(tmp, dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    else:
        pending = dir / PENDING_DIR
        shutil.rmtree(pending, ignore_errors=True)  # a killed writer's stage: this one replaces it
        pending.mkdir()
        for name, data in {**files, META_FILE: text}.items():  # model.json last: the set is whole
            _atomic_bytes(pending / name, data)
        _move_staged(dir)
    return dir


def _move_staged(dir: Path) -> None:
    """Move a complete stage's files into ``dir``, model.json last, then drop the stage."""
    pending = dir / PENDING_DIR
    names = [p.name for p in pending.iterdir() if p.is_file() and not p.name.startswith(".")]
    for name in sorted(names, key=lambda n: (n == META_FILE, n)):
        os.replace(pending / name, dir / name)
    fsync_dir(dir)  # the renames reach the disk before the stage is gone
    shutil.rmtree(pending)


def settle(dir: Path | str) -> None:
    """Finish, or undo, a checkpoint write into ``dir`` that a kill interrupted: afterwards its
    files are one consistent set. For the directory's writer, before it resumes (a reader must
    not: it could undo a write still in progress)."""
    dir = Path(dir)
    pending = dir / PENDING_DIR
    if not pending.is_dir():
        return
    if (pending / META_FILE).is_file():
        _move_staged(dir)
        log.warning("checkpoint_write_completed", model_dir=str(dir))
    else:
        shutil.rmtree(pending)
        log.warning("checkpoint_write_undone", model_dir=str(dir))


def best_record(best: dict[str, Any]) -> dict[str, Any] | None:
    """What model.json says of the best checkpoint (None before any validation)."""
    if not math.isfinite(best.get("score", -math.inf)):
        return None
    keys = ("stage", "epoch", "updates", "score", "data_range")
    return {"dir": BEST_DIR, "selected_by": "val_sharpe", **{k: best.get(k) for k in keys}}


def save_best(
    dir: Path | str,
    policy: torch.nn.Module,
    meta: dict[str, Any],
    metrics: dict[str, Any],
    best: dict[str, Any],
) -> Path:
    """Write the best-on-validation network to ``DIR/best`` (no training state: it is a model to
    use or judge, the run continues from ``DIR/model.pt``)."""
    record = best_record(best)
    full = {**meta, "metrics": metrics, "checkpoint": {"model_pt": "best", **(record or {})}}
    return save_model(Path(dir) / BEST_DIR, policy, full)


def read_meta(dir: Path | str) -> dict[str, Any]:
    """``model.json`` of a model directory (CheckpointError when missing or unreadable)."""
    dir = Path(dir)
    missing = [n for n in (MODEL_FILE, META_FILE) if not (dir / n).is_file()]
    if missing:
        raise CheckpointError(
            f"not a chartrl model dir: {dir} ({', '.join(missing)} missing); train one with `chartrl train --out {dir}`"
        )
    try:
        meta = json.loads((dir / META_FILE).read_text())
        if not isinstance(meta, dict):
            raise ValueError("top level is not an object")
        for key in ("strategy", "chart_spec", "series"):
            if key not in meta:
                raise ValueError(f"field {key!r} missing")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt/truncated checkpoint {dir / META_FILE}: {exc}") from None
    return meta


def training_series(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Every series a model learnt from: model.json ``training_series`` (name, exchange, symbol,
    timeframe, from, until, candles, validation_from, weight, fills), or for a model written
    before it existed, its one ``series`` with ``data_range``."""
    if meta.get("training_series"):
        return list(meta["training_series"])
    s, span = meta.get("series") or {}, meta.get("data_range") or {}
    name = f"{s.get('exchange')}:{s.get('symbol')}:{s.get('timeframe')}"
    keys = ("from", "until", "candles", "validation_from")
    return [{"name": name, **s, **{k: span.get(k) for k in keys if k in span}}]


def series_in_training(meta: dict[str, Any], exchange: str, symbol: str, timeframe: str) -> bool:
    """Whether the model learnt from this series; False means using it here is a transfer."""
    return any(
        (t.get("exchange"), t.get("symbol"), t.get("timeframe")) == (exchange, symbol, timeframe)
        for t in training_series(meta)
    )


def load_model(
    dir: Path | str,
    device: str | torch.device = "cpu",
    expect_spec: ChartSpec | None = None,
    expect_series: tuple[str, str, str] | None = None,
    allow_transfer: bool = False,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The policy (in eval mode, on ``device``) and its meta; refuses a mismatch or a bad file.
    ``expect_series`` must be one of the series the model learnt from (``training_series``).
    ``allow_transfer``: ``expect_series`` may be a series the model was not trained on (the
    chart is scale-free, so a model can read another market's chart), as long as the timeframe
    is the model's; the load is logged as ``model_transfer``, and the caller labels its output
    (``series_in_training``)."""
    from chartrl.strategies.registry import build_policy

    dir = Path(dir)
    meta = read_meta(dir)
    try:
        saved_spec = ChartSpec(**meta["chart_spec"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"corrupt/truncated checkpoint {dir / META_FILE}: chart_spec invalid ({exc})"
        ) from None
    if expect_spec is not None:
        diffs = saved_spec.diff(expect_spec)
        if diffs:
            raise CheckpointError(
                f"model {dir} was trained on another chart spec (model != expected): {'; '.join(diffs)}; retrain or use a matching config"
            )
    series = meta["series"]
    if expect_series is not None and allow_transfer:
        if series.get("timeframe") != expect_series[2]:
            raise CheckpointError(
                f"model {dir} was trained on {series.get('timeframe')} candles, not "
                f"{expect_series[2]}: a chart of another timeframe is another picture of time; "
                f"use --timeframe {series.get('timeframe')} or a model of that timeframe"
            )
        if not series_in_training(meta, *expect_series):
            learnt = ", ".join(str(t.get("name")) for t in training_series(meta))
            log.warning(
                "model_transfer",
                model_dir=str(dir),
                series=":".join(expect_series),
                training_series=learnt,
            )
    elif expect_series is not None and not series_in_training(meta, *expect_series):
        # Any series of a multi-series model is its own; the message names the first one.
        got = (series.get("exchange"), series.get("symbol"), series.get("timeframe"))
        diffs = [
            f"{k}: {a!r} != {b!r}"
            for k, a, b in zip(("exchange", "symbol", "timeframe"), got, expect_series, strict=True)
            if a != b
        ]
        if diffs:
            raise CheckpointError(
                f"model {dir} was trained on another series (model != expected): {'; '.join(diffs)}"
            )
    raw = (dir / MODEL_FILE).read_bytes()
    digest = meta.get("weights_sha256")
    if digest and hashlib.sha256(raw).hexdigest() != digest:
        raise CheckpointError(
            f"corrupt/truncated checkpoint {dir / MODEL_FILE}: its SHA-256 does not match model.json (file damaged, or being replaced: retry)"
        )
    # Our own messages: torch's name its internals (zip reader) or suggest weights_only=False,
    # which would let a damaged or foreign file run code.
    fix = f"retrain it, or restore {dir} from a backup"
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unpickling failure means the same thing to the operator
        raise CheckpointError(
            f"corrupt/truncated checkpoint {dir / MODEL_FILE}: not a readable weights file; {fix}"
        ) from None
    try:
        policy = build_policy(
            meta["strategy"], config=meta.get("policy_config") or None, spec=saved_spec
        )
    except CheckpointError:
        raise
    except Exception:  # noqa: BLE001
        raise CheckpointError(
            f"corrupt/truncated checkpoint {dir / META_FILE}: its policy_config does not build a {meta['strategy']!r} policy "
            f"(written by another chartrl version?); {fix}"
        ) from None
    try:
        policy.load_state_dict(state)
    except Exception:  # noqa: BLE001 - wrong keys or shapes
        raise CheckpointError(
            f"corrupt/truncated checkpoint {dir / MODEL_FILE}: its weights do not fit the {meta['strategy']!r} policy model.json "
            f"describes (written by another chartrl version?); {fix}"
        ) from None
    policy.to(device).eval()
    return policy, meta


def load_train_state(dir: Path | str) -> dict[str, Any]:
    """Optimizer, target network and counters saved beside the model for ``--resume``."""
    path = Path(dir) / TRAIN_STATE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: {dir} cannot be resumed (it was not written by `chartrl train`); start a new --out"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - as in load_model: our message, not torch's
        raise CheckpointError(
            f"corrupt/truncated training state {path}: not a readable torch file, so {dir} cannot be resumed; restore it from a "
            f"backup or train anew into another --out (the model itself may still load)"
        ) from None


def train_state_bytes(
    target: torch.nn.Module,
    dqn_optimizer: torch.optim.Optimizer,
    imitation_optimizer: torch.optim.Optimizer,
    counters: dict[str, int],
    rng: np.random.Generator,
) -> bytes:
    """What ``--resume`` needs beside the weights (``TRAIN_STATE_FILE``): the target network, both
    optimisers, the counters and the numpy stream."""
    buf = io.BytesIO()
    torch.save(
        {
            "target": target.state_dict(),
            "dqn_optimizer": dqn_optimizer.state_dict(),
            "imitation_optimizer": imitation_optimizer.state_dict(),
            "counters": counters,
            "numpy_rng": rng.bit_generator.state,
        },
        buf,
    )
    return buf.getvalue()


def restore_train_state(
    dir: Path | str,
    target: torch.nn.Module,
    dqn_optimizer: torch.optim.Optimizer,
    imitation_optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    rank: int = 0,
) -> dict[str, int]:
    """Load ``train_state_bytes``' content from ``dir`` into the objects; returns the counters.
    Only rank 0's numpy stream was saved: other ranks keep their own fresh streams."""
    state = load_train_state(dir)
    target.load_state_dict(state["target"])
    dqn_optimizer.load_state_dict(state["dqn_optimizer"])
    imitation_optimizer.load_state_dict(state["imitation_optimizer"])
    if rank == 0:
        rng.bit_generator.state = state["numpy_rng"]
    return {k: int(v) for k, v in state["counters"].items()}
