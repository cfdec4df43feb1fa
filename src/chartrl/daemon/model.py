"""The policy the daemon trades with: the champion checkpoint (or a rule baseline), stepped one candle
at a time exactly as the backtest steps it, with its recurrent state carried between ticks.

The chart is rendered with the ChartSpec stored in the checkpoint, never the config's: the same
weights on another picture mean nothing. A model directory replaced by the retrain (a new inode
for ``model.json``) is noticed by :meth:`PolicyRunner.changed`, and the daemon loads it and
re-warms the recurrent state over recent candles before its next decision.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from chartrl.chart.spec import ChartSpec
from chartrl.config.settings import Settings
from chartrl.daemon.tick_result import ms_since
from chartrl.errors import CheckpointError, DataError
from chartrl.logs import get_logger

log = get_logger("chartrl.daemon.model")

WARMUP_CANDLES = 64
"""Candles a recurrent state is re-warmed over after a (re)load or a gap (no trading meanwhile)."""
HISTORY_MARGIN = 120
"""Candles loaded before the chart window so every indicator (MA, Bollinger, RSI, MACD) is settled."""


class _Series(BaseModel):
    model_config = ConfigDict(extra="allow")
    exchange: str
    symbol: str
    timeframe: str


class ModelMeta(BaseModel):
    """What the daemon needs of a ``model.json``, checked whole before any of it is used: a
    malformed champion (``series`` a string, a spec that does not build) is refused on load,
    never found out by an AttributeError on every tick."""

    model_config = ConfigDict(extra="allow")
    strategy: str
    chart_spec: ChartSpec
    series: _Series
    weights_sha256: str | None = None
    policy_config: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    counters: dict[str, Any] | None = None


def validate_meta(model_dir: Path) -> None:
    """CheckpointError naming ``model.json`` and each bad field, when it is not a usable model."""
    from chartrl.train.checkpoint import META_FILE, read_meta

    meta = read_meta(model_dir)
    try:
        ModelMeta.model_validate(meta)
    except ValidationError as exc:
        bad = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise CheckpointError(
            f"invalid model {model_dir / META_FILE}: {bad}; retrain it or restore the previous champion"
        ) from None


def resolve_device(name: str) -> Any:
    import torch

    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _model_stamp(model_dir: Path) -> tuple[int, int] | None:
    # The retrain renames a whole new directory into place: a new inode tells us, cheaply.
    for name in ("model.json", "model.pt"):
        try:
            st = os.stat(model_dir / name)
            return st.st_ino, st.st_mtime_ns
        except OSError:
            continue
    return None


def model_version(model_dir: Path, meta: dict[str, Any]) -> str:
    """A short hash of the weights (meta's ``version`` is the package version, not the model's)."""
    if meta.get("weights_sha256"):
        return str(meta["weights_sha256"])[:12]
    h = hashlib.sha256()
    with open(model_dir / "model.pt", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


@dataclass
class Decision:
    action: int
    q: list[float] | None
    hidden: Any
    render_ms: float = 0.0
    policy_ms: float = 0.0


class PolicyRunner:
    """One policy (neural checkpoint or rule baseline) and what it needs to decide on live candles."""

    def __init__(self, settings: Settings, device: Any = None) -> None:
        self.settings = settings
        self.strategy = settings.model.strategy
        self.model_dir = settings.model_dir
        self.device = device if device is not None else resolve_device(settings.model.device)
        self.policy: Any = None
        self.rule: Any = None
        self.meta: dict[str, Any] = {}
        self.spec: ChartSpec = settings.chart
        self.version = "rule:" + self.strategy
        self._stamp: tuple[int, int] | None = None
        self.load()

    @property
    def neural(self) -> bool:
        return self.policy is not None

    @property
    def recurrent(self) -> bool:
        return bool(self.neural and getattr(self.policy, "recurrent", False))

    def load(self) -> None:
        from chartrl.strategies.registry import is_neural

        if not is_neural(self.strategy):
            from chartrl.strategies.registry import build_rule

            self.rule = build_rule(self.strategy)
            if getattr(self.rule, "cheating", False):
                raise CheckpointError(
                    f"model.strategy = {self.strategy!r} reads the future; it can only be a backtest baseline"
                )
            self.spec, self.version = self.settings.chart, f"rule:{self.strategy}"
            return
        from chartrl.train.checkpoint import load_model

        if not (self.model_dir / "model.pt").is_file():
            raise CheckpointError(
                f"no champion model in {self.model_dir}; train one with `chartrl train` (it writes there) or set model.dir"
            )
        stamp = _model_stamp(self.model_dir)
        validate_meta(self.model_dir)
        # Another series of the model's timeframe is a transfer (logged model_transfer); another
        # timeframe is refused.
        policy, meta = load_model(
            self.model_dir, self.device, expect_series=self._series(), allow_transfer=True
        )
        self.spec = ChartSpec(**meta["chart_spec"])
        diff = self.spec.diff(self.settings.chart)
        if diff:
            log.warning(
                "model_spec_differs_from_config",
                model_dir=str(self.model_dir),
                differences=diff,
                using="the model's chart spec",
            )
        name = getattr(policy, "name", meta.get("strategy"))
        if name and name != self.strategy:
            log.warning("model_strategy_differs_from_config", model=name, config=self.strategy)
        self.policy = policy.eval()
        self.meta = meta
        self.version = model_version(self.model_dir, meta)
        self._stamp = stamp
        log.info(
            "model_loaded",
            model_dir=str(self.model_dir),
            version=self.version,
            strategy=name,
            device=str(self.device),
            recurrent=self.recurrent,
        )

    def _series(self) -> tuple[str, str, str]:
        s = self.settings
        return s.exchange.id, s.market.symbol, s.market.timeframe

    def changed(self) -> bool:
        """True when the model directory on disk is no longer the one loaded."""
        return self.neural and _model_stamp(self.model_dir) != self._stamp

    def history_needed(self) -> int:
        """Candles to load for one decision (chart window + indicator warm-up + state warm-up)."""
        return self.spec.window + HISTORY_MARGIN + WARMUP_CANDLES + 2

    def initial_hidden(self) -> Any:
        return self.policy.initial_hidden(1, self.device) if self.recurrent else None

    def _frames(
        self, candles: pd.DataFrame, idx: np.ndarray | None = None
    ) -> tuple[Any, np.ndarray]:
        """Charts ending at ``idx`` (default: the last row); with ``idx`` None-safe for warm-up ranges."""
        import torch

        from chartrl.chart.tensor_render import TensorRenderer
        from chartrl.strategies.base import stack_frames

        renderer = stack_frames(TensorRenderer(candles, self.spec, self.device), self.policy)
        valid = np.asarray(renderer.valid_indices)
        if idx is None:
            idx = np.array([len(candles) - 1])
            if len(valid) == 0 or valid[-1] != idx[0]:
                raise DataError(
                    f"the newest {len(candles)} candles cannot make a {self.spec.window}-candle chart with its indicators "
                    "(too few, or a bad candle in the window); fetch more history with `chartrl fetch`"
                )
        else:
            idx = idx[np.isin(idx, valid)]
        frames = renderer.render(idx) if len(idx) else None
        if frames is not None and not isinstance(frames, torch.Tensor):
            frames = torch.as_tensor(frames)
        return frames, idx

    def decide(self, candles: pd.DataFrame, position: tuple[float, float], hidden: Any) -> Decision:
        """The action at the close of the last row of ``candles`` (every row is a closed candle)."""
        t0 = time.perf_counter()
        if self.rule is not None:
            action = self._rule_decide(candles, position)
            return Decision(action, None, None, 0.0, ms_since(t0))
        import torch

        from chartrl.strategies.base import greedy

        frames, _ = self._frames(candles)
        t1 = time.perf_counter()
        with torch.inference_mode():
            feats = self.policy.features(frames.to(self.device))
            pos = torch.tensor([position], dtype=feats.dtype, device=self.device)
            q, hidden = self.policy.head(feats, pos, hidden if self.recurrent else None)
            action = int(greedy(q, pos).item())  # .item() waits for the GPU: policy_ms is honest
        return Decision(
            action,
            [float(x) for x in q[0].tolist()],
            hidden,
            round((t1 - t0) * 1000, 2),
            ms_since(t1),
        )

    def _rule_decide(self, candles: pd.DataFrame, position: tuple[float, float]) -> int:
        if self.strategy == "random":
            # The loaded window slides, so a row index means nothing across ticks: seed by candle number.
            from chartrl.strategies.registry import build_rule

            ms = int(candles["timestamp"].iloc[-1].value // 1_000_000)
            self.rule = build_rule("random", seed=ms // 1000 % (2**31))
            self.rule.prepare(candles.iloc[-1:])
            return int(self.rule.decide(0, position))
        self.rule.prepare(candles)
        return int(self.rule.decide(len(candles) - 1, position))

    def warm(
        self, candles: pd.DataFrame, steps: int, position: tuple[float, float], hidden: Any = None
    ) -> Any:
        """Step the recurrent state over the last ``steps`` rows of ``candles`` without trading.

        The position features are today's for every step (the past ones are not kept): an
        approximation that only matters for the first candles after a reload or a gap.
        """
        if not self.recurrent or steps <= 0:
            return hidden
        import torch

        n = len(candles)
        frames, idx = self._frames(candles, np.arange(max(n - steps, 0), n, dtype=np.int64))
        h = hidden if hidden is not None else self.initial_hidden()
        if frames is None:
            return h
        with torch.inference_mode():
            feats = self.policy.features(frames.to(self.device))
            pos = torch.tensor([[position] * len(idx)], dtype=feats.dtype, device=self.device)
            _, h = self.policy.head(feats.unsqueeze(0), pos, h)
        return h
