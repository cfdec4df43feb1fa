"""Imitation conditioned on the position, and the fee-aware oracle as a baseline.

On charts that carry no information the greedy policy must hold (class rebalancing that moves the
argmax trades on them; the old inverse-frequency weights are the positive control); on charts that
do, it learns the labels, differently from flat and from long. The oracle baseline acts from the
account's actual position and its backtest return is the DP's value under the same fill model.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from chartrl.account.fills import MarketRules
from chartrl.actions import Action
from chartrl.backtest.runner import run_backtest
from chartrl.chart.spec import ChartSpec
from chartrl.strategies.oracle import optimal_actions, optimal_values
from chartrl.strategies.registry import build_policy
from chartrl.strategies.rules import OracleStrategy, make_rule
from chartrl.testing.synthetic import synthetic_candles
from chartrl.train.env import FrameCache
from chartrl.train.imitation import (
    Targets,
    class_weights,
    follow_policy,
    imitation_epoch,
    imitation_targets,
)

SPEC = ChartSpec(window=40, height=32, width=48, ma_periods=(5, 10), bollinger_period=10)
HOLD, BUY, SELL = int(Action.HOLD), int(Action.BUY), int(Action.SELL)
N = 3000


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Frames:
    """A FrameSource of noise charts, with a bright block in corner ``pattern[t]`` (1 or 2) when
    ``pattern`` is given: charts that carry exactly that much information."""

    def __init__(self, pattern: np.ndarray | None, channels: int) -> None:
        self.pattern, self.channels = pattern, channels
        self.valid_indices = np.arange(N)
        self.noise = np.random.default_rng(0).integers(0, 128, (N, 1, 32, 48), dtype=np.uint8)

    def render(self, ends) -> torch.Tensor:
        ends = np.asarray(ends)
        x = np.repeat(self.noise[ends], self.channels, axis=1)
        if self.pattern is not None:
            p = self.pattern[ends]
            x[p == 1, :, :12, :12] = 255
            x[p == 2, :, -12:, -12:] = 255
        return torch.from_numpy(x)


def _source(pattern: np.ndarray | None) -> FrameCache:
    from chartrl.chart.tensor_render import TensorRenderer

    channels = TensorRenderer(synthetic_candles(200, seed=1), SPEC).channels
    return FrameCache(Frames(pattern, channels))


def _epoch(policy, opt, cache, close, targets, weights, rng, **kw) -> float:
    """One imitation epoch of ``policy`` on training candles 0..1999 (2000.. are held out)."""
    kw = {"batch_size": 8, "seq_len": 4, "fee": 0.001, "max_grad_norm": 10.0} | kw
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return imitation_epoch(
        policy,
        policy,
        opt,
        scaler,
        cache,
        close,
        np.arange(2000),
        targets,
        weights,
        rng=rng,
        device=torch.device("cpu"),
        **kw,
    )


def _train(strategy, cache, targets, weights, updates, seed=0):
    torch.manual_seed(seed)
    policy = build_policy(
        strategy, SPEC, feat_dim=16, **({"hidden_size": 16} if strategy != "cnn" else {})
    )
    close = np.full(N, 100.0)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    for _ in range(updates // 50):
        _epoch(policy, opt, cache, close, targets, weights, rng, burn_in=2, max_updates=50)
    return policy


def _greedy(policy, cache, long: bool) -> np.ndarray:
    """Greedy actions on the held-out candles from one position (a sequence for recurrent ones)."""
    idx = np.arange(2000, N - 1)
    pos = torch.zeros(len(idx), 2)
    pos[:, 0] = float(long)
    policy.eval()
    with torch.no_grad():
        x = cache.get(idx)
        if policy.recurrent:
            q, _ = policy(x[None], pos[None])
            q = q[0]
        else:
            q, _ = policy(x, pos)
    return q.argmax(-1).numpy()


def _random_labels(p_trade: float, by_position: bool = True, seed: int = 3) -> Targets:
    """Labels drawn independently of the charts: buy (from flat) and sell (from long) each with
    ``p_trade``; or, not ``by_position``, buy and sell each with ``p_trade / 2`` whatever the
    position, as the extrema labeller gives them."""
    rng = np.random.default_rng(seed)
    labels = np.full((N, 2), HOLD, dtype=np.int64)
    if by_position:
        labels[rng.random(N) < p_trade, 0] = BUY
        labels[rng.random(N) < p_trade, 1] = SELL
        return Targets(labels, None)
    u = rng.random(N)
    labels[u < p_trade / 2] = BUY
    labels[(u >= p_trade / 2) & (u < p_trade)] = SELL
    return Targets(labels, None)


@pytest.mark.parametrize("strategy,by_position", [("cnn", True), ("cnn", False), ("cnnrnn", True)])
def test_uninformative_charts_hold_after_imitation(strategy: str, by_position: bool) -> None:
    """Noise charts, labels drawn independently of them: the policy holds."""
    cache, targets = _source(None), _random_labels(0.1, by_position)
    policy = _train(strategy, cache, targets, None, 200)
    acts = np.r_[_greedy(policy, cache, False), _greedy(policy, cache, True)]
    assert np.mean(acts != HOLD) < 0.02, np.bincount(acts, minlength=3)


def test_inverse_frequency_weights_trade_on_uninformative_charts() -> None:
    """The positive control of the test above, on the old labels (the same in either position, 5 %
    buy and 5 % sell): the old weights make the scores near uniform, and the argmax trades."""
    cache, targets = _source(None), _random_labels(0.1, by_position=False)
    policy = _train("cnn", cache, targets, class_weights(targets.labels[:2000]), 200)
    acts = np.r_[_greedy(policy, cache, False), _greedy(policy, cache, True)]
    assert np.mean(acts != HOLD) > 0.05, np.bincount(acts, minlength=3)


def test_informative_charts_teach_position_conditioned_labels() -> None:
    """Corner 1 means buy when flat (hold when long), corner 2 sell when long (hold when flat): the
    same chart gets another action in another position, and held-out charts are read right."""
    pattern = np.random.default_rng(5).choice(3, N, p=[0.7, 0.15, 0.15])
    labels = np.full((N, 2), HOLD, dtype=np.int64)
    labels[pattern == 1, 0] = BUY
    labels[pattern == 2, 1] = SELL
    cache = _source(pattern)
    policy = _train("cnn", cache, Targets(labels, None), None, 400)
    held_out = labels[2000 : N - 1]
    flat, long = _greedy(policy, cache, False), _greedy(policy, cache, True)
    assert np.mean(flat == held_out[:, 0]) > 0.9 and np.mean(long == held_out[:, 1]) > 0.9
    assert (flat == BUY).any() and (long == SELL).any()


def test_dp_labels_differ_by_position() -> None:
    c = synthetic_candles(3000, seed=4)
    t = imitation_targets(c["open"].to_numpy(), c["close"].to_numpy(), "dp", trade_penalty=0.01)
    flat, long = t.labels[:, 0], t.labels[:, 1]
    assert set(flat) == {HOLD, BUY} and set(long) == {HOLD, SELL}
    assert 0.5 < np.mean(flat == HOLD) < 0.999 and 0.5 < np.mean(long == HOLD) < 0.999
    # The discounted values (the distillation target) rank the actions almost as the labels do.
    assert np.mean(optimal_actions(t.values.astype(np.float64)) == t.labels) > 0.95
    ext = imitation_targets(c["open"].to_numpy(), c["close"].to_numpy(), "extrema")
    assert np.array_equal(ext.labels[:, 0], ext.labels[:, 1]) and ext.values is None


def test_values_target_regresses_q_to_the_scaled_dp_values() -> None:
    """--imitation-target values: Q moves to the DP's discounted action values x reward_scale."""
    c = synthetic_candles(N, seed=4)
    o, cl = c["open"].to_numpy(), c["close"].to_numpy()
    targets = imitation_targets(o, cl, "dp", trade_penalty=0.01)
    cache = _source(None)
    torch.manual_seed(0)
    policy = build_policy("cnn", SPEC, feat_dim=16)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    rng, losses = np.random.default_rng(0), []
    for _ in range(4):
        losses.append(
            _epoch(
                policy,
                opt,
                cache,
                cl,
                targets,
                None,
                rng,
                burn_in=0,
                open_=o,
                target="values",
                reward_scale=100.0,
                max_updates=50,
            )
        )
    assert losses[-1] < 0.5 * losses[0], losses
    with torch.no_grad():
        q, _ = policy.eval()(cache.get(np.arange(2000)), torch.zeros(2000, 2))
    want = 100.0 * targets.values[:2000, 0].mean(0)
    assert np.allclose(q.mean(0).numpy(), want, atol=0.3 * np.abs(want).max())
    with pytest.raises(ValueError, match="needs the dp oracle"):
        _epoch(
            policy,
            opt,
            cache,
            cl,
            imitation_targets(o, cl, "extrema"),
            None,
            rng,
            burn_in=0,
            target="values",
        )


def test_rollout_follows_the_policys_own_actions() -> None:
    """A policy that always buys is flat at the first step and long from the next, entered at the
    next open with slippage and fee; one that always sells stays flat."""

    class Always(torch.nn.Module):
        recurrent = True

        def __init__(self, action: int) -> None:
            super().__init__()
            self.action = action

        def forward(self, frames, position, hidden=None):
            q = torch.zeros(*position.shape[:-1], 3)
            q[..., self.action] = 1.0
            return q, hidden

    o = np.linspace(100, 130, 40)
    c = o + 0.5
    idx = np.arange(5, 11)[None].repeat(2, 0)
    x = torch.zeros(2, 6, 1, 2, 2)
    start = np.array([False, True])
    entry = np.array([0.0, 90.0])
    pos, held, _ = follow_policy(Always(BUY), x, idx, start, entry, o, c, 0.001, 0.0005, 2)
    assert held[0].tolist() == [False] + [True] * 5 and held[1].all()
    want = math.log(c[7] / (o[6] * 1.0005 * 1.001))
    assert math.isclose(float(pos[0, 2, 1]), want, rel_tol=1e-5)
    assert math.isclose(float(pos[1, 2, 1]), math.log(c[7] / 90.0), rel_tol=1e-5)
    _, held, _ = follow_policy(Always(SELL), x, idx, start, entry, o, c, 0.001, 0.0005, 2)
    assert not held[0].any() and held[1].tolist() == [True] + [False] * 5


def test_oracle_baseline_acts_from_the_position_and_earns_the_dp_value() -> None:
    """The backtest of the dp oracle makes exactly the DP's path: its log return is the DP's value
    from flat at the first decision, the penalty added back per round trip."""
    c = synthetic_candles(1500, seed=6)
    rules = MarketRules()
    pen = 0.01
    oracle = make_rule("oracle", oracle_trade_penalty=pen, rules=rules)
    res = run_backtest(oracle, c, SPEC, rules)
    first = int(np.flatnonzero(c["timestamp"] == res.candles["timestamp"].iloc[0])[0])
    sub = c.iloc[first:]
    q = optimal_values(
        sub["open"].to_numpy(), sub["close"].to_numpy(), rules.fee, rules.slippage_bps, pen
    )
    entries = sum(f.side == "buy" for f in res.fills)
    assert entries > 3
    got = math.log(res.equity[-1] / res.equity[0])
    assert math.isclose(got, q[0, 0].max() + pen * entries, abs_tol=1e-6)
    oracle.prepare(c)
    decided = {(oracle.decide(t, (0.0, 0.0)), oracle.decide(t, (1.0, 0.0))) for t in range(len(c))}
    assert (BUY, HOLD) in decided and (HOLD, SELL) in decided  # the same candle, two answers
    assert OracleStrategy(method="extrema").params() == {"method": "extrema", "window": 24}


@pytest.mark.parametrize(
    "bad,named",
    [
        (["--oracle", "best"], "--oracle must be dp or extrema"),
        (["--oracle-trade-penalty", "-0.1"], "--oracle-trade-penalty must be in [0, 1)"),
        (["--imitation-target", "q"], "--imitation-target must be labels or values"),
        (["--imitation-weights", "balanced"], "--imitation-weights must be none or inverse"),
        (["--imitation-target", "values", "--oracle", "extrema"], "needs the dp oracle"),
    ],
)
def test_cli_refuses_bad_oracle_options(tmp_path: Path, capsys, bad, named) -> None:
    from chartrl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(
            ["train", "--strategy", "cnn", "--synthetic", "500", "--out", str(tmp_path / "m"), *bad]
        )
    err = capsys.readouterr().err
    assert int(exc.value.code or 0) == 2 and named in err and len(err.strip().splitlines()) == 1, (
        err
    )
