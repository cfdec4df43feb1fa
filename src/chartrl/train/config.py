"""The trainer's hyperparameters: a dataclass, a docstring per field (as
CleanRL's ``Args``), stored in model.json as ``hyperparameters``; and the exploration schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from chartrl.strategies.rules import DEFAULT_TRADE_PENALTY


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
    trade_penalty: float = DEFAULT_TRADE_PENALTY
    """Penalty per round trip, log-return units, taken from the DQN reward of each filled buy: the
    objective the dp oracle optimises (``oracle_trade_penalty``), so an entry must promise more
    than its fees and this margin. An hourly return's noise dwarfs the fees, and a Q estimate
    fitted to it errs by more than a fee from chart to chart; without a margin the greedy policy
    trades on that error. Validation, backtests and the daemon judge the unshaped net return.
    0: the raw net log return."""
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
_BEFORE = {"norm": "batch", "dueling": False, "n_step": 1, "frame_stack": 1, "trade_penalty": 0.0}


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
