"""The trainer: optional imitation pretraining, then Double DQN on the replay environment.

Written top to bottom in the manner of CleanRL's ``dqn_atari.py``: the hyperparameters (a
dataclass with a docstring per field, config.py), then one loop in plain sight. Shared pieces live
next door: the environment and frame cache (env.py), the replay memory (replay.py), the TD loss and
optimiser step (learner.py), imitation (imitation.py), evaluation (evaluation.py), validation
scheduling and TensorBoard (monitor.py), history.csv (history.py), checkpoints (checkpoint.py) and
torch.distributed plumbing (distributed.py).

Every policy trains on sequences: stateless ones (cnn, resnet) on sequences of length 1, which is
plain DQN; recurrent ones (cnnrnn, gru) on ``burn_in + seq_len`` steps R2D2-style, with the hidden
state stored at the sequence start, burnt in without gradients and then unrolled with gradients.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from chartrl.account.fills import MarketRules
from chartrl.errors import UsageError
from chartrl.logs import get_logger
from chartrl.strategies.base import Action, greedy, stack_frames, valid_actions
from chartrl.train import checkpoint as ckpt
from chartrl.train.config import TrainConfig, eps_decay_for, epsilon_at, train_config
from chartrl.train.distributed import DistInfo, barrier, sync_buffers, wrap
from chartrl.train.env import ReplayEnv, TrainData, max_lanes
from chartrl.train.evaluation import validate
from chartrl.train.history import history_bytes, read_history
from chartrl.train.imitation import class_weights, imitation_epoch, imitation_targets_for
from chartrl.train.learner import new_policy, optimizer_step, td_loss
from chartrl.train.monitor import (
    DqnScalars,
    due,
    eval_every_for,
    progress_columns,
    selection_score,
    write_validation,
)
from chartrl.train.replay import SequenceReplay
from chartrl.train.series import lane_layout, series_visits

__all__ = [  # the names other modules import from here, defined next door
    "TrainConfig",
    "TrainResult",
    "eps_decay_for",
    "epsilon_at",
    "read_history",
    "td_loss",
    "train",
    "train_config",
]

log = get_logger(__name__)


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    """One row per epoch (also written to history.csv)."""
    policy: nn.Module
    """The trained policy (this rank's copy; identical on every rank of a distributed run)."""


def train(
    strategy: str,
    data: TrainData,
    cfg: TrainConfig,
    out_dir: Path | str,
    meta: dict[str, Any],
    *,
    device: torch.device | str = "cpu",
    dist: DistInfo | None = None,
    rules: MarketRules | None = None,
    initial_cash: float = 10_000.0,
    resume: bool = False,
    progress: bool = True,
    tb_dir: Path | str | None = None,
) -> TrainResult:
    """Train ``strategy`` on ``data``; writes the model dir after every epoch (TensorBoard events
    to ``tb_dir``, by default ``out_dir/tb``; a sweep gathers its trials' under one root)."""
    from rich.progress import Progress

    out_dir, device, dist, rules = (
        Path(out_dir),
        torch.device(device),
        dist or DistInfo(),
        rules or MarketRules(),
    )
    main = dist.is_main
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, dist.rank])
    series = tuple(meta["series"][k] for k in ("exchange", "symbol", "timeframe"))
    most = max_lanes(len(data.train)) // dist.world_size
    if "dqn" in cfg.stages and cfg.num_envs > most:  # refused before minutes of imitation
        raise UsageError(
            f"--num-envs {cfg.num_envs}: {len(data.train)} training candles feed at most {most} "
            f"lanes per process; use --num-envs {most} or less, or load more candles"
        )
    if resume:  # the saved network, whatever policy_kwargs built it; refused if spec/series differ
        for d in (out_dir, out_dir / ckpt.BEST_DIR) if main else ():
            ckpt.settle(d)  # a checkpoint write a kill interrupted: finished or undone
        barrier(dist)
        policy = ckpt.load_model(out_dir, "cpu", expect_spec=data.spec, expect_series=series)[0]
    else:
        policy = new_policy(strategy, data.spec, cfg)
    policy = policy.to(device)
    data = replace(data, frames=stack_frames(data.frames, policy))  # the same, or K stacked
    target = copy.deepcopy(policy).eval().requires_grad_(False)
    model = wrap(policy, dist, device)
    dqn_opt = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
    imit_opt = torch.optim.Adam(policy.parameters(), lr=cfg.imitation_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    counters = {"imitation_epochs": 0, "dqn_epochs": 0, "transitions": 0, "updates": 0}
    history: list[dict[str, Any]] = []
    if resume:
        counters.update(
            ckpt.restore_train_state(out_dir, target, dqn_opt, imit_opt, rng, dist.rank)
        )
        history = read_history(out_dir)
        log.info("train_resumed", dir=str(out_dir), **counters)
    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tb_dir or out_dir / "tb"))
    hidden_size = int(getattr(policy, "hidden_size", 0)) if policy.recurrent else 0

    # The best validation score so far (train/monitor.py selection_score) and where it was reached;
    # a resumed run on the same data carries it on, a fine-tune on other data starts afresh.
    best: dict[str, Any] = {"score": -math.inf}
    if resume:
        saved_best = (ckpt.read_meta(out_dir).get("checkpoint") or {}).get("best") or {}
        if saved_best and saved_best.get("data_range") == meta.get("data_range"):
            best.update(saved_best)
    last_eval: dict[str, Any] = {"version": None, "metrics": {}}

    def checkpoint(metrics: dict[str, float], where: dict[str, Any]) -> None:
        if main:
            state = ckpt.train_state_bytes(target, dqn_opt, imit_opt, counters, rng)
            full = {
                **meta,
                "strategy": strategy,
                "hyperparameters": asdict(cfg),
                "metrics": metrics,
                "counters": dict(counters),
                # model.pt is the last network; best/ holds the best one on validation.
                "checkpoint": {"model_pt": "last", **where, "best": ckpt.best_record(best)},
            }
            ckpt.save_model(
                out_dir,
                policy,
                full,
                extra_files={
                    ckpt.TRAIN_STATE_FILE: state,
                    "history.csv": history_bytes(history),
                },
            )
        barrier(dist)

    def evaluate(
        stage: str, epoch: int, loss: float, kind: str, extra: dict[str, Any]
    ) -> dict[str, Any]:
        """Validate the network as it is now: a history row, TensorBoard, maybe the best model."""
        t = time.perf_counter()
        # The network changes only by imitation epochs and DQN updates: the same pair, the same net.
        version = (counters["imitation_epochs"], counters["updates"])
        if last_eval["version"] == version:
            metrics, actions = last_eval["metrics"], None  # nothing learned since: same network
        else:
            sync_buffers(policy, dist)  # every rank validates and saves the very same network
            metrics, actions = validate(policy, data, rules, initial_cash, device)
        where = {"stage": stage, "epoch": epoch, "updates": counters["updates"]}
        row = {
            **where,
            "kind": kind,
            "loss": loss,
            **{f"val_{k}": v for k, v in metrics.items()},
            "val_seconds": round(time.perf_counter() - t, 3),
            **extra,
        }
        history.append(row)
        if writer is not None:
            write_validation(writer, row, actions)
        log.info("epoch_done" if kind == "epoch" else "evaluated", **row)
        last_eval.update(version=version, metrics=metrics)
        if metrics and selection_score(metrics) > best["score"]:
            best.update(where, score=selection_score(metrics), data_range=meta.get("data_range"))
            if main:
                best_meta = {**meta, "strategy": strategy, "hyperparameters": asdict(cfg)}
                ckpt.save_best(out_dir, policy, best_meta, metrics, best)
        return row

    def record(
        stage: str, epoch: int, loss: float, seconds: float, extra: dict[str, Any]
    ) -> dict[str, float]:
        extra = {"seconds": round(seconds, 3), **extra}
        row = evaluate(stage, epoch, loss, "epoch", extra)
        where = {k: row[k] for k in ("stage", "epoch", "updates")}
        metrics = last_eval["metrics"]
        checkpoint(metrics, where)
        return metrics

    with Progress(*progress_columns(), disable=not (progress and main), transient=False) as bar:
        # ---- stage 1: imitation of the oracle -------------------------------------------------
        if "imitation" in cfg.stages and counters["imitation_epochs"] < cfg.imitation_epochs:
            targets = imitation_targets_for(data, cfg, rules)  # training candles only
            inverse = cfg.imitation_weights == "inverse"
            weights = class_weights(targets.labels[data.train]) if inverse else None
            for epoch in range(counters["imitation_epochs"], cfg.imitation_epochs):
                t0, r0 = time.perf_counter(), data.frames.render_seconds
                task = bar.add_task(
                    f"imitation {epoch + 1}/{cfg.imitation_epochs}", total=None, info=""
                )
                loss = imitation_epoch(
                    policy,
                    model,
                    imit_opt,
                    scaler,
                    data.frames,
                    data.arrays.close,
                    data.train,
                    targets,
                    weights,
                    batch_size=cfg.batch_size,
                    seq_len=cfg.seq_len,
                    burn_in=cfg.burn_in,
                    fee=rules.fee,
                    max_grad_norm=cfg.max_grad_norm,
                    rng=rng,
                    device=device,
                    open_=data.arrays.open,
                    slippage_bps=rules.slippage_bps,
                    target=cfg.imitation_target,
                    reward_scale=cfg.reward_scale,
                    max_updates=cfg.max_steps_per_epoch,
                    on_update=lambda v, task=task: bar.update(
                        task, advance=1, info=f"loss {v:.4f}"
                    ),
                    series=data.series,
                )
                counters["imitation_epochs"] = epoch + 1
                record(
                    "imitation",
                    epoch + 1,
                    loss,
                    time.perf_counter() - t0,
                    {"render_seconds": round(data.frames.render_seconds - r0, 3)},
                )
            target.load_state_dict(policy.state_dict())

        # ---- stage 2: Double DQN ------------------------------------------------------------------
        if "dqn" in cfg.stages and counters["dqn_epochs"] < cfg.epochs:
            lanes = cfg.num_envs
            segments, lane_rules = lane_layout(data, lanes * dist.world_size, rules)
            env = ReplayEnv(
                data.arrays,
                data.train,
                lanes,
                initial_cash,
                lane_rules,
                lane_offset=dist.rank * lanes,
                total_lanes=lanes * dist.world_size,
                segments=segments,
            )
            rb = SequenceReplay(
                cfg.buffer_size, lanes, hidden_size, seed=int(rng.integers(1 << 31))
            )
            b, t = (cfg.burn_in, cfg.seq_len) if policy.recurrent else (0, 1)
            n_seq = cfg.batch_size if policy.recurrent else cfg.batch_size * cfg.seq_len
            steps = (
                env.steps_per_epoch
                if cfg.max_steps_per_epoch is None
                else min(env.steps_per_epoch, cfg.max_steps_per_epoch)
            )
            # Rebinding cfg stores the schedules actually used in model.json (checkpoint() reads cfg).
            cfg = replace(
                cfg,
                eps_decay=eps_decay_for(cfg, cfg.epochs * steps * lanes),
                eval_every=eval_every_for(cfg, steps, lanes),
            )
            scalars = DqnScalars(writer)
            eps = epsilon_at(cfg, counters["transitions"], cfg.eps_decay)
            for epoch in range(counters["dqn_epochs"], cfg.epochs):
                t0, r0 = time.perf_counter(), data.frames.render_seconds
                task = bar.add_task(f"dqn {epoch + 1}/{cfg.epochs}", total=steps, info="")
                obs_idx, obs_pos = env.reset()
                hidden = policy.initial_hidden(lanes, device)
                losses: list[float] = []
                rewards = 0.0
                eval_seconds, epoch_updates0 = 0.0, counters["updates"]
                for step in range(steps):
                    eps = epsilon_at(cfg, counters["transitions"], cfg.eps_decay)
                    policy.eval()  # acting: BatchNorm on running statistics (see strategies/cnn.py)
                    with (
                        torch.no_grad(),
                        torch.autocast(
                            device.type, dtype=torch.float16, enabled=device.type == "cuda"
                        ),
                    ):
                        pos = torch.from_numpy(obs_pos).to(device)
                        q, next_hidden = policy(data.frames.get(obs_idx).to(device), pos, hidden)
                    actions = greedy(q, pos).cpu().numpy()
                    # Exploring picks among the valid actions: hold, or the order that changes
                    # the position (buy while flat, sell while long).
                    explore = rng.random(lanes) < eps
                    change = np.where(
                        valid_actions(pos)[:, Action.SELL].cpu().numpy(), Action.SELL, Action.BUY
                    )
                    actions[explore] = np.where(rng.random(lanes) < 0.5, 0, change)[explore]
                    scalars.acted(q, actions)
                    tr = env.step(actions)
                    # filled buys: a round trip each
                    entries = (tr["fills"] > 0) & (actions == Action.BUY)
                    rb.add(
                        obs_idx,
                        obs_pos,
                        actions,
                        (tr["reward"] - cfg.trade_penalty * entries) * cfg.reward_scale,
                        tr["terminated"],
                        tr["next_idx"],
                        tr["next_pos"],
                        tr["episode"],
                        hidden[0].float().cpu().numpy() if hidden is not None else None,
                        valid=tr["valid"],
                    )
                    rewards += float(tr["reward"].sum())
                    hidden = next_hidden
                    ended = tr["terminated"] | tr["truncated"]
                    if hidden is not None and ended.any():
                        hidden = hidden.clone()
                        # a new episode starts from scratch
                        hidden[:, torch.from_numpy(ended).to(device)] = 0.0
                    obs_idx, obs_pos = env.observe()
                    counters["transitions"] += lanes
                    # This run's replay, not the restored counter: a resumed run (and every
                    # nightly fine-tune) starts from an empty memory and must refill it first.
                    if (
                        len(rb) >= min(cfg.learning_starts, rb.capacity)
                        and step % cfg.train_frequency == 0
                        and rb.can_sample(b + t + cfg.n_step - 1)
                    ):
                        policy.train()
                        loss = td_loss(
                            rb.sample(n_seq, b + t + cfg.n_step - 1),
                            data.frames,
                            policy,
                            model,
                            target,
                            b,
                            cfg.gamma,
                            device,
                            cfg.n_step,
                        )
                        optimizer_step(loss, policy, dqn_opt, scaler, cfg.max_grad_norm)
                        losses.append(float(loss.item()))
                        counters["updates"] += 1
                        if counters["updates"] % cfg.target_network_frequency == 0:
                            target.load_state_dict(policy.state_dict())
                        scalars.updated(losses[-1], counters["updates"], eps)
                        left = (steps - 1 - step) // cfg.train_frequency  # updates to come
                        if due(
                            cfg, counters["updates"], counters["updates"] - epoch_updates0, left
                        ):
                            since = losses[-cfg.eval_every :]
                            t_eval = time.perf_counter()
                            evaluate(
                                "dqn",
                                epoch + 1,
                                float(np.mean(since)),
                                "eval",
                                {"epsilon": round(eps, 4)},
                            )
                            eval_seconds += time.perf_counter() - t_eval
                    bar.update(
                        task,
                        advance=1,
                        info=f"eps {eps:.2f} loss {np.mean(losses[-20:]) if losses else float('nan'):.4f}",
                    )
                counters["dqn_epochs"] = epoch + 1
                record(
                    "dqn",
                    epoch + 1,
                    float(np.mean(losses)) if losses else float("nan"),
                    time.perf_counter() - t0,
                    {
                        "epsilon": round(eps, 4),
                        "updates": counters["updates"],
                        "transitions": steps * lanes,
                        **series_visits(data, env.segments, steps),
                        "train_log_return": round(rewards / lanes, 6),
                        "render_seconds": round(data.frames.render_seconds - r0, 3),
                        "eval_seconds": round(eval_seconds, 3),
                    },
                )
    if writer is not None:
        writer.close()
    return TrainResult(history, policy)
