"""The trainer: optional imitation pretraining, then Double DQN on the replay environment.

Written top to bottom in the manner of CleanRL's ``dqn_atari.py``: a dataclass of hyperparameters,
then one loop in plain sight. Shared pieces live next door: the environment and frame cache
(env.py), the replay memory (replay.py), imitation (imitation.py), evaluation (evaluation.py),
checkpoints (checkpoint.py) and torch.distributed plumbing (distributed.py).

Every policy trains on sequences: stateless ones (cnn, resnet) on sequences of length 1, which is
plain DQN; recurrent ones (cnnrnn, gru) on ``burn_in + seq_len`` steps R2D2-style, with the hidden
state stored at the sequence start, burnt in without gradients and then unrolled with gradients.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from chartrl.account.fills import MarketRules
from chartrl.errors import UsageError
from chartrl.logs import get_logger
from chartrl.strategies.base import frozen_bn_stats, stack_frames
from chartrl.strategies.registry import build_policy
from chartrl.strategies.rules import DEFAULT_TRADE_PENALTY
from chartrl.train import checkpoint as ckpt
from chartrl.train.distributed import DistInfo, barrier, sync_buffers, wrap
from chartrl.train.env import FrameCache, ReplayEnv, TrainData, max_lanes
from chartrl.train.evaluation import greedy_run, run_metrics
from chartrl.train.imitation import class_weights, imitation_epoch, imitation_targets
from chartrl.train.monitor import (
    DqnScalars,
    due,
    eval_every_for,
    selection_score,
    write_validation,
)
from chartrl.train.replay import SequenceBatch, SequenceReplay

log = get_logger(__name__)


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (stored in model.json)."""

    seed: int = 1
    """Seed of weights, exploration and replay sampling (rank r of a distributed run adds r to the latter)."""
    stages: tuple[str, ...] = ("imitation", "dqn")
    """Stages to run, in order: 'imitation' (oracle labels), 'dqn' (reinforcement fine-tuning)."""
    epochs: int = 10
    """DQN epochs; one epoch walks the whole training part once (split over the lanes). A total: --resume stops there."""
    imitation_epochs: int = 3
    """Imitation epochs; each samples as many labelled frames as the training part holds."""
    num_envs: int = 8
    """Lanes walking consecutive slices of the training history at once (batched acting)."""
    learning_rate: float = 2.5e-4
    """Adam learning rate of the DQN stage."""
    imitation_lr: float = 1e-3
    """Adam learning rate of the imitation stage."""
    buffer_size: int = 50_000
    """Replay memory size in transitions (all lanes together)."""
    gamma: float = 0.99
    """Discount factor per candle."""
    target_network_frequency: int = 200
    """Gradient updates between copies of the online network into the target network."""
    batch_size: int = 16
    """Sequences per update; stateless policies take batch_size * seq_len single transitions instead."""
    seq_len: int = 8
    """Steps per sequence that receive a TD loss (recurrent policies); also the BPTT length of imitation."""
    burn_in: int = 8
    """Steps per sequence that only warm the hidden state up from its stored value (recurrent policies)."""
    learning_starts: int = 2_000
    """Transitions collected before the first update."""
    train_frequency: int = 16
    """Environment steps (of all lanes at once) between two updates: 16 x 8 lanes = 128 transitions per
    update of 16 x 8 learned steps (replay ratio 1 per epoch), sized so a cnnrnn epoch over the
    whole BTC history fits in 5 minutes on a 2-core CPU (benchmarks/train.py)."""
    eps_start: float = 0.9
    """Exploration rate until the first update (PyTorch DQN tutorial's EPS_START)."""
    eps_end: float = 0.05
    """Exploration rate it decays to (EPS_END)."""
    eps_decay: float | None = None
    """Exponential decay constant in transitions (EPS_DECAY), counted from learning_starts:
    eps = end + (start - end) * exp(-max(0, n - learning_starts) / decay). None: a fifth of the DQN
    transitions planned after learning_starts (epochs x steps x lanes), so eps is still ~0.6 after
    a tenth of the run and within 0.01 of the floor only in about its last tenth; the tutorial's 1000
    would reach the floor after 6k of the ~28k transitions of one BTC epoch. The value used is
    stored with the hyperparameters, so --resume continues the same schedule."""
    max_grad_norm: float = 10.0
    """Gradient norm clip."""
    reward_scale: float = 100.0
    """Rewards (hourly log returns, ~1e-3) are multiplied by this so Q-values are O(1) for the Huber loss."""
    oracle_window: int = 24
    """Half-width in candles of the extrema oracle's window (oracle = 'extrema' only)."""
    oracle: str = "dp"
    """Imitation targets: 'dp', the fee-aware optimal action from the position the policy is in;
    'extrema', the article's window-extrema labels (the same in either position)."""
    oracle_trade_penalty: float = DEFAULT_TRADE_PENALTY
    """Penalty per round trip of the dp oracle, log-return units: 0.02 gives ~4 round trips a week
    on hourly BTC (benchmarks/oracle_penalty.py); fees alone still trade on most hourly swings."""
    imitation_target: str = "labels"
    """'labels': cross-entropy on the oracle's action; 'values' (dp only): Huber regression of Q to
    the DP's discounted action values x reward_scale, the scale DQN then continues on."""
    imitation_weights: str = "none"
    """Cross-entropy class weights: 'none', or 'inverse' frequency (moves the argmax towards
    trading: kept only to reproduce the old imitation)."""
    validation_fraction: float = 0.15
    """Last fraction of the candles kept for validation (minus one chart window, purged)."""
    max_steps_per_epoch: int | None = None
    """Cap on environment steps (and imitation updates) per epoch, for smoke runs and benchmarks."""
    eval_every: int | None = None
    """DQN gradient updates between two greedy validation runs, at the multiples of N over the
    whole stage (each a history.csv row with the update count, TensorBoard points and a chance to
    become the best checkpoint), besides the one at every epoch end (one within half of N of an
    epoch end, before or after, is left to it). None: 10 validation points per run, epoch ends
    included (train/monitor.py); 0: epoch ends only. The value used is stored with the
    hyperparameters."""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides of the policy constructor (e.g. {'hidden_size': 64})."""
    norm: str = "group"
    """Conv normalisation: 'group' (default), 'layer', 'none' compute the same function when acting,
    learning and as the target; 'batch' uses batch statistics to learn, running ones to act."""
    dueling: bool = False
    """Dueling Q head (Q = V + A - mean A) instead of a linear one."""
    n_step: int = 1
    """Steps of reward summed before bootstrapping (n-step Double DQN), inside one episode."""
    frame_stack: int = 1
    """cnn only: the charts of the last K candles as the channels of its input (a memory of K)."""


# What a model.json written before a field existed was trained with (train_config fills these in).
_BEFORE = {"norm": "batch", "dueling": False, "n_step": 1, "frame_stack": 1}


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    """One row per epoch (also written to history.csv)."""
    policy: nn.Module
    """The trained policy (this rank's copy; identical on every rank of a distributed run)."""


def eps_decay_for(cfg: TrainConfig, planned_transitions: int) -> float:
    """``cfg.eps_decay``, or its default for a run of ``planned_transitions`` (see TrainConfig)."""
    if cfg.eps_decay is not None:
        return cfg.eps_decay
    return max(1.0, (planned_transitions - cfg.learning_starts) / 5)


def epsilon_at(cfg: TrainConfig, transitions: int, decay: float) -> float:
    """Exploration rate after ``transitions``: eps_start until learning_starts, then decaying."""
    n = max(0, transitions - cfg.learning_starts)
    return cfg.eps_end + (cfg.eps_start - cfg.eps_end) * math.exp(-n / decay)


def train_config(saved: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from model.json's ``hyperparameters`` (unknown keys of other versions dropped)."""
    known = {f.name for f in fields(TrainConfig)}
    kwargs = {**_BEFORE, **{k: v for k, v in saved.items() if k in known}}
    if "stages" in kwargs:
        kwargs["stages"] = tuple(kwargs["stages"])
    return TrainConfig(**kwargs)


def td_loss(
    batch: SequenceBatch,
    frames: FrameCache,
    policy: nn.Module,
    model: nn.Module,
    target: nn.Module,
    burn_in: int,
    gamma: float,
    device: torch.device,
    n_step: int = 1,
) -> torch.Tensor:
    """Double-DQN Huber loss on the steps after the burn-in, with n-step returns: step k's target
    is r_k + g r_(k+1) + ... + g^(n-1) r_(k+n-1) + g^n Q_target(s_(k+n), argmax Q_online(s_(k+n))).
    The sequence holds burn_in + learned + n - 1 steps, all of one episode, so the last n - 1 only
    supply rewards and bootstrap states. A terminated step (bankruptcy) ends the sum: nothing after
    it counts, no value is bootstrapped; a truncated one (slice end) keeps its next state, being
    stored only when that is the next candle. The no-grad passes of the online network (burn-in,
    the steps after the learned ones) leave BatchNorm's running statistics alone; under BatchNorm
    they normalise by their batch like the learned steps (see strategies/base.frozen_bn_stats)."""
    bsz, steps = batch.action.shape
    b, n = burn_in, n_step
    t = steps - b - (n - 1)  # steps that get a loss
    x = frames.get(batch.idx)
    x = x.view(bsz, steps + 1, *x.shape[1:]).to(device, non_blocking=True)
    pos = batch.position.to(device)
    h0 = batch.hidden.to(device) if batch.hidden is not None else None
    amp = device.type == "cuda"
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        with torch.no_grad():
            q_target, _ = target(x, pos, h0)  # (B, T+1, 3): its own burn-in, from the stored state
            with frozen_bn_stats(policy):
                h = policy(x[:, :b], pos[:, :b], h0)[1] if b else h0
        q, h_end = model(x[:, b : b + t], pos[:, b : b + t], h)
        with torch.no_grad(), frozen_bn_stats(policy):
            q_ahead, _ = policy(
                x[:, b + t :], pos[:, b + t :], h_end.detach() if h_end is not None else None
            )
    q, q_target, q_ahead = q.float(), q_target.float(), q_ahead.float()
    online = torch.cat([q[:, 1:].detach(), q_ahead], dim=1)  # states b+1 .. T
    next_online = online[:, n - 1 : n - 1 + t]  # the bootstrap states b+n .. b+n+t-1
    next_value = (
        q_target[:, b + n : b + n + t].gather(-1, next_online.argmax(-1, keepdim=True)).squeeze(-1)
    )
    rewards = batch.reward[:, b:].to(device).unfold(1, n, 1)  # (B, t, n): r_k .. r_(k+n-1)
    alive = (1.0 - batch.terminated[:, b:].to(device)).unfold(1, n, 1).cumprod(-1)
    before = torch.cat([torch.ones_like(alive[..., :1]), alive[..., :-1]], dim=-1)
    powers = gamma ** torch.arange(n, device=device, dtype=rewards.dtype)
    y = (rewards * powers * before).sum(-1) + gamma**n * alive[..., -1] * next_value
    q_sa = q.gather(-1, batch.action[:, b : b + t].to(device).unsqueeze(-1)).squeeze(-1)
    return F.smooth_l1_loss(q_sa, y)


def _step(
    loss: torch.Tensor,
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    clip: float,
) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(policy.parameters(), clip)
    scaler.step(optimizer)
    scaler.update()


def _validate(
    policy: nn.Module, data: TrainData, rules: MarketRules, cash: float, device: torch.device
) -> tuple[dict[str, float], np.ndarray | None]:
    """Validation metrics and the greedy actions (None without a validation part)."""
    if len(data.validation) == 0:
        return {}, None
    run = greedy_run(policy, data.frames, data.arrays, data.validation, cash, rules, device)
    return run_metrics(run, data.timeframe), run.actions


def _history_bytes(rows: list[dict[str, Any]]) -> bytes:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def read_history(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


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
) -> TrainResult:
    """Train ``strategy`` on ``data``; writes the model dir after every epoch."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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
    if (
        "dqn" in cfg.stages and cfg.num_envs > most
    ):  # refused before minutes of imitation, not after
        raise UsageError(
            f"--num-envs {cfg.num_envs}: {len(data.train)} training candles feed at most {most} lanes per process; "
            f"use --num-envs {most} or less, or load more candles"
        )
    if (
        resume
    ):  # the saved network, whatever policy_kwargs built it; refused if spec or series differ
        policy = ckpt.load_model(out_dir, "cpu", expect_spec=data.spec, expect_series=series)[0].to(
            device
        )
    else:
        kwargs = {"norm": cfg.norm, "dueling": cfg.dueling, **cfg.policy_kwargs}
        if cfg.frame_stack != 1:
            if strategy != "cnn":
                raise UsageError(
                    f"--frame-stack {cfg.frame_stack}: only the cnn stacks frames; "
                    f"{strategy} has its own memory, drop --frame-stack"
                )
            kwargs["frame_stack"] = cfg.frame_stack
        policy = build_policy(strategy, data.spec, **kwargs).to(device)
    data = replace(data, frames=stack_frames(data.frames, policy))  # the same, or K stacked
    target = copy.deepcopy(policy).eval().requires_grad_(False)
    model = wrap(policy, dist, device)
    dqn_opt = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
    imit_opt = torch.optim.Adam(policy.parameters(), lr=cfg.imitation_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    counters = {"imitation_epochs": 0, "dqn_epochs": 0, "transitions": 0, "updates": 0}
    history: list[dict[str, Any]] = []
    if resume:
        state = ckpt.load_train_state(out_dir)
        target.load_state_dict(state["target"])
        dqn_opt.load_state_dict(state["dqn_optimizer"])
        imit_opt.load_state_dict(state["imitation_optimizer"])
        counters.update({k: int(v) for k, v in state["counters"].items()})
        if dist.rank == 0:  # other ranks keep their own fresh streams (only rank 0's was saved)
            rng.bit_generator.state = state["numpy_rng"]
        history = read_history(out_dir)
        log.info("train_resumed", dir=str(out_dir), **counters)
    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"))
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
            buf = io.BytesIO()
            torch.save(
                {
                    "target": target.state_dict(),
                    "dqn_optimizer": dqn_opt.state_dict(),
                    "imitation_optimizer": imit_opt.state_dict(),
                    "counters": counters,
                    "numpy_rng": rng.bit_generator.state,
                },
                buf,
            )
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
                    ckpt.TRAIN_STATE_FILE: buf.getvalue(),
                    "history.csv": _history_bytes(history),
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
            metrics, actions = _validate(policy, data, rules, initial_cash, device)
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

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not (progress and main), transient=False) as bar:
        # ---- stage 1: imitation of the oracle -------------------------------------------------
        if "imitation" in cfg.stages and counters["imitation_epochs"] < cfg.imitation_epochs:
            end = data.validation_start  # the oracle sees training candles only
            targets = imitation_targets(
                data.arrays.open[:end],
                data.arrays.close[:end],
                cfg.oracle,
                fee=rules.fee,
                slippage_bps=rules.slippage_bps,
                trade_penalty=cfg.oracle_trade_penalty,
                window=cfg.oracle_window,
                gamma=cfg.gamma,
            )
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
            env = ReplayEnv(
                data.arrays,
                data.train,
                lanes,
                initial_cash,
                rules,
                lane_offset=dist.rank * lanes,
                total_lanes=lanes * dist.world_size,
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
                        q, next_hidden = policy(
                            data.frames.get(obs_idx).to(device),
                            torch.from_numpy(obs_pos).to(device),
                            hidden,
                        )
                    actions = q.argmax(-1).cpu().numpy()
                    explore = rng.random(lanes) < eps
                    actions[explore] = rng.integers(0, 3, int(explore.sum()))
                    scalars.acted(q, actions)
                    tr = env.step(actions)
                    rb.add(
                        obs_idx,
                        obs_pos,
                        actions,
                        tr["reward"] * cfg.reward_scale,
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
                        hidden[:, torch.from_numpy(ended).to(device)] = (
                            0.0  # a new episode starts from scratch
                        )
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
                        _step(loss, policy, dqn_opt, scaler, cfg.max_grad_norm)
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
                        "train_log_return": round(rewards / lanes, 6),
                        "render_seconds": round(data.frames.render_seconds - r0, 3),
                        "eval_seconds": round(eval_seconds, 3),
                    },
                )
    if writer is not None:
        writer.close()
    return TrainResult(history, policy)
