"""What the trainer measures while it learns: the validation schedule, the best-checkpoint score
and the TensorBoard scalars of the DQN stage (Q values, actions, epsilon, TD loss)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

VALIDATION_POINTS = 10
"""Validation runs a DQN stage gets at least, when ``eval_every`` is left to its default."""
TB_EVERY = 50
"""Gradient updates between two TensorBoard points of the acting and learning scalars."""


def updates_per_epoch(cfg: Any, steps: int) -> int:
    """Gradient updates of a DQN epoch of ``steps`` steps once learning has started."""
    return math.ceil(steps / cfg.train_frequency)


def planned_updates(cfg: Any, steps: int, lanes: int) -> int:
    """Gradient updates a DQN stage of ``cfg.epochs`` epochs of ``steps`` steps will make: one
    every ``train_frequency`` steps, none before ``learning_starts`` transitions."""
    waiting = math.ceil(cfg.learning_starts / lanes / cfg.train_frequency)
    return max(1, cfg.epochs * updates_per_epoch(cfg, steps) - waiting)


def _epoch_lengths(cfg: Any, steps: int, lanes: int) -> list[int]:
    """Planned updates of each DQN epoch: the first ones are shorter, or empty, while the replay
    waits for learning_starts transitions."""
    per = updates_per_epoch(cfg, steps)
    waiting = math.ceil(cfg.learning_starts / lanes / cfg.train_frequency)
    lengths = []
    for _ in range(max(1, cfg.epochs)):
        lengths.append(per - min(waiting, per))
        waiting -= per - lengths[-1]
    return lengths


def _points(every: int, lengths: list[int]) -> int:
    """Validation points (``due`` inside the epochs + every epoch end) under ``every``."""
    rule = type("Schedule", (), {"eval_every": every})
    inside, done = 0, 0
    for n in lengths:
        inside += sum(due(rule, done + u, u, n - u) for u in range(1, n + 1))
        done += n
    return inside + len(lengths)


def eval_every_for(cfg: Any, steps: int, lanes: int) -> int:
    """``cfg.eval_every``, or its default: the largest N that gives ``VALIDATION_POINTS`` points,
    epoch ends included (0: the epoch ends suffice). The points are the multiples of N over the
    whole stage, and each epoch end takes the place of the multiple nearest it (``due``), so for
    U planned updates N just above U / 10.5 puts the 10th multiple within N/2 of the last update:
    9 multiples, less one per earlier epoch end, plus the epoch ends, make exactly 10. Short runs
    step N down until they reach 10. A validation costs a greedy pass over the whole validation
    part, so points beyond those asked for are training time lost (benchmarks/train.py)."""
    if cfg.eval_every is not None:
        return int(cfg.eval_every)
    if max(1, cfg.epochs) >= VALIDATION_POINTS:
        return 0
    lengths = _epoch_lengths(cfg, steps, lanes)
    every = sum(lengths) * 2 // (2 * VALIDATION_POINTS + 1) + 1
    while every > 1 and _points(every, lengths) < VALIDATION_POINTS:
        every -= 1
    return every


def due(cfg: Any, updates: int, updates_in_epoch: int, updates_left_in_epoch: int) -> bool:
    """Whether to validate after update number ``updates`` of the stage (the run's counter, so a
    resumed run continues the same grid), the epoch's ``updates_in_epoch``-th with
    ``updates_left_in_epoch`` to come: at every multiple of ``cfg.eval_every``, except within
    half of it of an epoch end, before or after (the end validates anyway; the window
    (end - N/2, end + N/2] holds exactly one multiple, so an epoch end replaces one point)."""
    every = cfg.eval_every
    return (
        bool(every)
        and updates % every == 0
        and 2 * updates_left_in_epoch >= every
        and 2 * updates_in_epoch > every
    )


def validation_points(cfg: Any, steps: int, lanes: int) -> int:
    """Validation points a DQN stage of ``cfg`` makes (``due`` inside epochs + every epoch end)."""
    return _points(eval_every_for(cfg, steps, lanes), _epoch_lengths(cfg, steps, lanes))


def selection_score(metrics: dict[str, Any]) -> float:
    """What "best on validation" means: the validation Sharpe; a run that never traded (no
    Sharpe) scores 0, what doing nothing earns, so a policy whose candle returns average below
    zero ranks below it. A Sharpe of simple returns can be above 0 while the compound return is
    below (volatility drag): such a policy outranks doing nothing (docs/experiments.md)."""
    sharpe = metrics.get("sharpe")
    return 0.0 if sharpe is None else float(sharpe)


def write_validation(writer: Any, row: dict[str, Any], actions: np.ndarray | None) -> None:
    """One validation row to TensorBoard: DQN rows over gradient updates (``val/*``), imitation
    rows over imitation epochs (``imitation/*``); the other columns as ``<stage>/<kind>_<name>``;
    the greedy actions as a histogram."""
    stage = row["stage"]
    prefix, step = ("val", int(row["updates"])) if stage == "dqn" else (stage, int(row["epoch"]))
    for k, v in row.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            continue  # a Sharpe of None (never traded) is no point, not a zero
        if k.startswith("val_"):
            writer.add_scalar(f"{prefix}/{k[4:]}", v, step)
        elif k not in ("epoch", "updates"):
            writer.add_scalar(f"{stage}/{row['kind']}_{k}", v, step)
    if actions is not None and len(actions):
        writer.add_histogram(f"{prefix}/greedy_actions", np.asarray(actions), step, bins=3)
        for a, name in enumerate(("hold", "buy", "sell")):
            writer.add_scalar(f"{prefix}/greedy_{name}_share", float(np.mean(actions == a)), step)
    writer.flush()


class DqnScalars:
    """TensorBoard scalars of the DQN stage every ``TB_EVERY`` updates: the acting network's Q mean
    and max over the states it acted on, the histogram of the actions taken (exploration included),
    epsilon and the TD loss (Huber of the TD error) averaged since the last point."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self._reset()

    def _reset(self) -> None:
        self.q_sum, self.q_n, self.q_max = 0.0, 0, -math.inf
        self.actions: list[np.ndarray] = []
        self.losses: list[float] = []

    def acted(self, q: torch.Tensor, actions: np.ndarray) -> None:
        if self.writer is None:
            return
        q = q.detach().float()
        self.q_sum += float(q.sum())
        self.q_n += q.numel()
        self.q_max = max(self.q_max, float(q.max()))
        self.actions.append(np.asarray(actions).copy())

    def updated(self, loss: float, updates: int, eps: float) -> None:
        if self.writer is None:
            return
        self.losses.append(loss)
        if updates % TB_EVERY:
            return
        w = self.writer
        w.add_scalar("dqn/td_loss", float(np.mean(self.losses)), updates)
        w.add_scalar("dqn/epsilon", eps, updates)
        if self.q_n:
            w.add_scalar("dqn/q_mean", self.q_sum / self.q_n, updates)
            w.add_scalar("dqn/q_max", self.q_max, updates)
        if self.actions:
            acts = np.concatenate(self.actions)
            w.add_histogram("dqn/actions", acts, updates, bins=3)
            for a, name in enumerate(("hold", "buy", "sell")):
                w.add_scalar(f"dqn/{name}_share", float(np.mean(acts == a)), updates)
        self._reset()


def progress_columns() -> list[Any]:
    """The trainer's rich progress bar: stage and epoch, bar, count, loss/eps, elapsed, remaining."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
