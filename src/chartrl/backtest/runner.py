"""Replay a candle series through a strategy and the shared fill model.

The decision at the close of candle t sees candles <= t and the account's position features marked
at that close; it fills at the open of candle t+1 (``SimAccount.execute``), and the account is
marked again at the close of t+1. For a neural policy the expensive part (render + CNN features)
runs batched over every decision candle first, in chunks; only the cheap recurrent head steps in
time, because it needs the position the previous fills left. That is what makes years of hourly
candles a matter of seconds, and it gives the same numbers as rendering one chart per step.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from chartrl.account.base import Candle, SimAccount
from chartrl.account.fills import Fill, MarketRules
from chartrl.chart.spec import ChartSpec
from chartrl.errors import DataError
from chartrl.logs import get_logger
from chartrl.market.candles import to_ms
from chartrl.strategies.base import Action, greedy
from chartrl.strategies.rules import BuyHold, RuleStrategy

log = get_logger("chartrl.backtest.runner")

ACTION_NAMES = {int(Action.HOLD): "hold", int(Action.BUY): "buy", int(Action.SELL): "sell"}
RENDER_CHUNK = 256  # charts rendered at once: ~10 MB of uint8 frames at the default size
CPU_FEATURE_CHUNK = (
    32  # frames per CNN call on a CPU: small enough for the activations to stay in cache
)
GPU_FEATURE_CHUNK = 1024


@dataclass
class BacktestResult:
    """One replay. Arrays of equity points have N+1 entries (close of candles first..last); arrays
    of decisions have N (decided at the close of first..last-1, filled at the next open)."""

    strategy: str
    cheating: bool
    candles: pd.DataFrame
    """The candles first..last (inclusive), the period the metrics cover."""
    equity: np.ndarray
    position: np.ndarray
    cash: np.ndarray
    actions: np.ndarray
    fills: list[Fill] = field(default_factory=list)
    fill_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """For each fill, the index (into ``candles``) of the candle whose open filled it."""
    params: dict[str, Any] = field(default_factory=dict)
    rules: MarketRules | None = None
    """The fill model it ran under (the skill test prices random policies with it)."""

    @property
    def start(self) -> pd.Timestamp:
        return self.candles["timestamp"].iloc[0]

    @property
    def end(self) -> pd.Timestamp:
        return self.candles["timestamp"].iloc[-1]

    def decisions_frame(self) -> pd.DataFrame:
        """One row per decision: when it was taken (= the fill candle's open time), the action,
        what filled (side, price, amount; empty when nothing traded), position and cash after the
        fill, and equity marked at the close of the fill candle."""
        ts = self.candles["timestamp"].iloc[1:].reset_index(drop=True)
        n = len(ts)
        side = np.full(n, "", dtype=object)
        price = np.full(n, np.nan)
        amount = np.full(n, np.nan)
        for f, i in zip(self.fills, self.fill_index, strict=True):
            side[i - 1], price[i - 1], amount[i - 1] = f.side, f.price, f.amount
        return pd.DataFrame(
            {
                "timestamp": ts,
                "action": [ACTION_NAMES[int(a)] for a in self.actions],
                "side": side,
                "fill_price": price,
                "fill_amount": amount,
                "position": self.position[1:],
                "cash": self.cash[1:],
                "equity": self.equity[1:],
            }
        )


def decision_span(
    candles: pd.DataFrame,
    window: int,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    first_valid: int = 0,
) -> tuple[int, int]:
    """(first, last) candle indices: the first decision candle has ``window`` candles up to it
    (earlier candles before ``start`` serve as warm-up) and is at or after ``start``; ``last`` is
    the last candle at or before ``end``. Raises DataError when fewer than two steps remain."""
    n = len(candles)
    if n == 0:
        raise DataError(
            "no candles in the requested range; choose another --from/--until or fetch data first"
        )
    ts = candles["timestamp"]
    lo = 0 if start is None else int(ts.searchsorted(pd.Timestamp(start)))
    hi = n - 1 if end is None else int(ts.searchsorted(pd.Timestamp(end), side="right")) - 1
    first = max(lo, window - 1, first_valid)
    if hi - first < 2:
        shown = max(hi - lo + 1, 0)
        span = f"{ts.iloc[min(lo, n - 1)]:%Y-%m-%d %H:%M} to {ts.iloc[max(hi, 0)]:%Y-%m-%d %H:%M}"
        raise DataError(
            f"{shown} candles from {span} (with {lo} earlier ones for warm-up), but a chart needs {window} "
            f"candles up to the first decision and 2 more to trade; widen --from/--until or fetch more history"
        )
    return first, hi


class _Progress:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self._p = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._p = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Any]:
        if self._p is None:
            yield lambda n=1: None
            return
        with self._p:
            tid = self._p.add_task(description, total=total)
            yield lambda n=1: self._p.advance(tid, n)


class _RuleDecider:
    def __init__(self, rule: RuleStrategy, candles: pd.DataFrame) -> None:
        self.rule = rule
        rule.prepare(candles)

    def decide(self, k: int, t: int, position: tuple[float, float]) -> int:
        return self.rule.decide(t, position)


class _PolicyDecider:
    """Chart features of every decision candle up front; the head steps with the live position.

    A candle without a complete chart (a bad candle inside its window) gets no decision: the
    policy holds there and its recurrent state skips the step.
    """

    def __init__(
        self,
        policy: Any,
        renderer: Any,
        idx: np.ndarray,
        device: Any,
        progress: _Progress,
        chunk: int,
    ) -> None:
        import torch

        self.torch = torch
        self.policy = policy.eval()
        self.device = device
        ok = np.isin(idx, np.asarray(renderer.valid_indices))
        if not ok.all():
            log.warning("backtest_candles_without_chart", candles=int((~ok).sum()), action="hold")
        # Row of each decision in the feature matrix (-1: no chart).
        self.row = np.where(ok, np.cumsum(ok) - 1, -1)
        render_idx = idx[ok]
        on_cpu = torch.device(device).type == "cpu"
        encoder = self.policy
        if on_cpu:
            # NHWC convolutions are markedly cheaper on CPU; a copy keeps the caller's model as it was.
            encoder = copy.deepcopy(self.policy).to(memory_format=torch.channels_last)
        step = CPU_FEATURE_CHUNK if on_cpu else GPU_FEATURE_CHUNK
        feats = []
        with torch.inference_mode(), progress.task("chart features", len(render_idx)) as advance:
            for s in range(0, len(render_idx), chunk):
                part = render_idx[s : s + chunk]
                with _single_thread(
                    on_cpu
                ):  # the renderer's small ops only lose time to a thread pool
                    frames = torch.as_tensor(renderer.render(part)).to(device)
                if on_cpu:
                    frames = frames.contiguous(memory_format=torch.channels_last)
                for j in range(0, len(part), step):
                    feats.append(encoder.features(frames[j : j + step]))
                advance(len(part))
        self.feats = torch.cat(feats) if feats else torch.zeros(0)
        self.hidden = policy.initial_hidden(1, device)

    def decide(self, k: int, t: int, position: tuple[float, float]) -> int:
        r = int(self.row[k])
        if r < 0:
            return int(Action.HOLD)
        torch = self.torch
        with torch.inference_mode():
            pos = torch.tensor([position], dtype=self.feats.dtype, device=self.device)
            q, self.hidden = self.policy.head(self.feats[r : r + 1], pos, self.hidden)
            return int(greedy(q, pos).item())


def first_chart_index(candles: pd.DataFrame, spec: ChartSpec, renderer: Any = None) -> int:
    """Index of the first candle with a complete chart (window and indicator warm-up), so every
    strategy, rule or neural, starts deciding at the same candle."""
    if renderer is None:
        from chartrl.chart.tensor_render import TensorRenderer

        renderer = TensorRenderer(candles, spec, "cpu")
    valid = np.asarray(renderer.valid_indices)
    return int(valid[0]) if len(valid) else len(candles)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (None: leave the setting alone)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _single_thread(enabled: bool) -> contextlib.AbstractContextManager[None]:
    """One torch thread for batch-of-one steps and the renderer's small ops: too small to split,
    and on a busy machine the thread pool's hand-offs cost more than the maths."""
    return _torch_threads(1 if enabled else None)


def _is_rule(strategy: Any) -> bool:
    return isinstance(strategy, RuleStrategy)


def run_backtest(
    strategy: Any,
    candles: pd.DataFrame,
    spec: ChartSpec,
    rules: MarketRules,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    initial_cash: float = 10_000.0,
    device: Any = "cpu",
    progress: bool = False,
    span: tuple[int, int] | None = None,
    chunk: int = RENDER_CHUNK,
    threads: int | None = None,
) -> BacktestResult:
    """Replay ``candles`` (canonical frame, warm-up included) through ``strategy`` (a RuleStrategy
    or a neural Policy) from ``start`` to ``end``; ``span`` forces the (first, last) indices.

    ``threads``: torch threads of the CNN pass; default 1 on a CPU, where one thread per process
    measured 4x faster than two on this project's shared 2-core machine (benchmarks/backtest.py).
    """
    bar = _Progress(progress)
    candles = candles.reset_index(drop=True)
    renderer = None
    if not _is_rule(strategy):
        from chartrl.chart.tensor_render import TensorRenderer
        from chartrl.strategies.base import stack_frames

        renderer = stack_frames(TensorRenderer(candles, spec, device), strategy)
    if span is None:
        span = decision_span(
            candles, spec.window, start, end, first_chart_index(candles, spec, renderer)
        )
    first, last = span
    idx = np.arange(first, last, dtype=np.int64)  # decision candles; each fills at idx + 1
    if _is_rule(strategy):
        decider: Any = _RuleDecider(strategy, candles)
        name, cheating, params = strategy.name, strategy.cheating, strategy.params()
    else:
        import torch

        cpu = torch.device(device).type == "cpu"
        with _torch_threads(threads if threads is not None else (1 if cpu else None)):
            decider = _PolicyDecider(strategy, renderer, idx, device, bar, chunk)
        name, cheating, params = getattr(strategy, "name", "policy"), False, {}

    ts_ms = to_ms(candles["timestamp"]).to_numpy()
    o, h, lo_, c, v = (
        candles[k].to_numpy(np.float64) for k in ("open", "high", "low", "close", "volume")
    )
    account = SimAccount(initial_cash, rules)
    n = len(idx)
    equity, position, cash = np.empty(n + 1), np.empty(n + 1), np.empty(n + 1)
    actions = np.empty(n, dtype=np.int64)
    fill_index: list[int] = []
    equity[0], position[0], cash[0] = initial_cash, 0.0, initial_cash
    with bar.task(f"replay {name}", n) as advance, _single_thread(not _is_rule(strategy)):
        for k, t in enumerate(idx):
            # Position features as of the close of t: what the policy may know when deciding.
            action = decider.decide(k, int(t), account.book.position_features(c[t]))
            actions[k] = action
            if account.execute(
                action,
                Candle(int(ts_ms[t + 1]), o[t + 1], h[t + 1], lo_[t + 1], c[t + 1], v[t + 1]),
            ):
                fill_index.append(k + 1)
            equity[k + 1], position[k + 1], cash[k + 1] = (
                account.equity(),
                account.position,
                account.cash,
            )
            if (k + 1) % 1024 == 0 or k + 1 == n:
                advance(k % 1024 + 1)
    log.debug(
        "backtest_done",
        strategy=name,
        steps=n,
        fills=len(account.book.fills),
        equity=float(equity[-1]),
    )
    return BacktestResult(
        strategy=name,
        cheating=cheating,
        candles=candles.iloc[first : last + 1].reset_index(drop=True),
        equity=equity,
        position=position,
        cash=cash,
        actions=actions,
        fills=list(account.book.fills),
        fill_index=np.asarray(fill_index, dtype=np.int64),
        params=params,
        rules=rules,
    )


def run_baseline(
    result: BacktestResult,
    candles: pd.DataFrame,
    spec: ChartSpec,
    rules: MarketRules,
    initial_cash: float,
) -> BacktestResult:
    """Buy-and-hold over exactly the candles ``result`` covers (same fill model, same start)."""
    candles = candles.reset_index(drop=True)
    first = int(candles["timestamp"].searchsorted(result.start))
    last = int(candles["timestamp"].searchsorted(result.end))
    return run_backtest(
        BuyHold(), candles, spec, rules, initial_cash=initial_cash, span=(first, last)
    )
