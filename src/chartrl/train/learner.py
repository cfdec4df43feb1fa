"""One learning step of the DQN stage: the n-step Double-DQN loss of a replayed batch of
sequences (R2D2-style burn-in for recurrent policies) and the clipped, scaled optimiser step."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from chartrl.chart.spec import ChartSpec
from chartrl.errors import UsageError
from chartrl.strategies.base import frozen_bn_stats, greedy
from chartrl.strategies.registry import build_policy
from chartrl.train.config import TrainConfig
from chartrl.train.env import FrameCache
from chartrl.train.replay import SequenceBatch


def new_policy(strategy: str, spec: ChartSpec, cfg: TrainConfig) -> nn.Module:
    """A freshly initialised ``strategy`` for ``spec`` built as ``cfg`` says (norm, dueling head,
    frame stack, policy_kwargs); --frame-stack is refused for policies with a memory of their own."""
    kwargs = {"norm": cfg.norm, "dueling": cfg.dueling, **cfg.policy_kwargs}
    if cfg.frame_stack != 1:
        if strategy != "cnn":
            raise UsageError(
                f"--frame-stack {cfg.frame_stack}: only the cnn stacks frames; "
                f"{strategy} has its own memory, drop --frame-stack"
            )
        kwargs["frame_stack"] = cfg.frame_stack
    return build_policy(strategy, spec, **kwargs)


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
    best = greedy(next_online, pos[:, b + n : b + n + t])  # over the actions valid there
    next_value = q_target[:, b + n : b + n + t].gather(-1, best.unsqueeze(-1)).squeeze(-1)
    rewards = batch.reward[:, b:].to(device).unfold(1, n, 1)  # (B, t, n): r_k .. r_(k+n-1)
    alive = (1.0 - batch.terminated[:, b:].to(device)).unfold(1, n, 1).cumprod(-1)
    before = torch.cat([torch.ones_like(alive[..., :1]), alive[..., :-1]], dim=-1)
    powers = gamma ** torch.arange(n, device=device, dtype=rewards.dtype)
    y = (rewards * powers * before).sum(-1) + gamma**n * alive[..., -1] * next_value
    q_sa = q.gather(-1, batch.action[:, b : b + t].to(device).unsqueeze(-1)).squeeze(-1)
    return F.smooth_l1_loss(q_sa, y)


def optimizer_step(
    loss: torch.Tensor,
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    clip: float,
) -> None:
    """Backpropagate ``loss`` (scaled under CUDA autocast), clip the gradient norm, step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(policy.parameters(), clip)
    scaler.step(optimizer)
    scaler.update()
