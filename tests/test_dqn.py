"""The DQN pieces one by one: the Double DQN target, terminated vs truncated episodes, breaks in
the history, the exploration schedule and BatchNorm statistics during a training step."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from chartrl.account.fills import MarketRules
from chartrl.chart.spec import ChartSpec
from chartrl.strategies.registry import build_policy
from chartrl.testing.synthetic import synthetic_candles
from chartrl.train.dqn import TrainConfig, eps_decay_for, epsilon_at, td_loss
from chartrl.train.env import CandleArrays, ReplayEnv, prepare_data
from chartrl.train.imitation import imitation_epoch
from chartrl.train.replay import SequenceBatch, SequenceReplay

SPEC = ChartSpec(window=40, height=32, width=48, ma_periods=(5, 10), bollinger_period=10)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- exploration ---------------------------------------------------------------------------------


def test_exploration_outlasts_learning_starts_and_reaches_the_floor_late() -> None:
    cfg = (
        TrainConfig()
    )  # the defaults on the BTC history: ~28k training decisions walked by 8 lanes
    planned = cfg.epochs * (28_131 // cfg.num_envs - 1) * cfg.num_envs
    decay = eps_decay_for(cfg, planned)

    def eps(n: float) -> float:
        return epsilon_at(cfg, int(n), decay)

    assert (
        eps(0) == eps(cfg.learning_starts) == pytest.approx(cfg.eps_start)
    )  # nothing learned yet: explore
    assert (
        eps(cfg.learning_starts) > 0.5 and eps(planned / 10) > 0.5
    )  # still mostly exploring after one epoch
    assert eps(0.8 * planned) > cfg.eps_end + 0.01  # not at the floor until late in the run
    assert eps(planned) == pytest.approx(cfg.eps_end, abs=0.01)
    # The article's schedule, EPS_END + (EPS_START - EPS_END) * exp(-n / EPS_DECAY), from learning_starts.
    assert eps(cfg.learning_starts + decay) == pytest.approx(
        cfg.eps_end + (cfg.eps_start - cfg.eps_end) / math.e
    )
    assert eps_decay_for(replace(cfg, eps_decay=1000.0), planned) == 1000.0  # --eps-decay wins


# ---- the TD target -------------------------------------------------------------------------------


class _Frames:
    """A frame cache whose frame of candle t is just the number t."""

    def get(self, idx: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(idx), dtype=torch.float32).reshape(-1, 1)


class _TableQ(torch.nn.Module):
    """Q(frame t) = table[t]. Its hidden state is the last candle it saw, and it insists on being
    handed the state of the candle just before its first frame: a burn-in that is skipped, or a
    pass that does not continue where the previous one stopped, fails here."""

    recurrent = True

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(
        self, x: torch.Tensor, position: torch.Tensor, hidden: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = x[..., 0].long()
        assert hidden is not None and torch.equal(hidden[0, :, 0].long(), t[:, 0] - 1), (
            "hidden state not carried"
        )
        return self.table[t], t[:, -1:].T.unsqueeze(-1).float()


def _best(q: torch.Tensor, position: torch.Tensor, masked: bool = True) -> int:
    """The greedy action of one state's Q-values: hold or buy while flat, hold or sell while long
    (or, ``masked`` False, the plain argmax over all three)."""
    if not masked:
        return int(q.argmax())
    choices = [0, 2] if float(position[0]) > 0.5 else [0, 1]
    return max(choices, key=lambda a: (float(q[a]), -a))


def _positions(g: torch.Generator, rows: int, steps: int) -> torch.Tensor:
    """Random position features, flat and long mixed, so the valid actions differ by step."""
    long = torch.randint(0, 2, (rows, steps), generator=g).float()
    return torch.stack([long, long * 0.01], dim=-1)


def _reference(
    batch: SequenceBatch,
    online: torch.Tensor,
    target: torch.Tensor,
    b: int,
    gamma: float,
    *,
    double: bool = True,
    mask: torch.Tensor | None = None,
    masked: bool = True,
) -> torch.Tensor:
    """The loss written out per step: y = r + gamma * (1 - terminated) * Q_target(s', a'), a' the
    online network's best action valid in s' (Double DQN)."""
    mask = batch.terminated if mask is None else mask
    q_sa, y = [], []
    for i in range(batch.idx.shape[0]):
        for k in range(b, batch.action.shape[1]):
            s, s_next = int(batch.idx[i, k]), int(batch.idx[i, k + 1])
            pos = batch.position[i, k + 1]
            a_next = _best(online[s_next] if double else target[s_next], pos, masked)
            y.append(batch.reward[i, k] + gamma * (1 - mask[i, k]) * target[s_next, a_next])
            q_sa.append(online[s, batch.action[i, k]])
    return F.smooth_l1_loss(torch.stack(q_sa), torch.stack(y))


def test_td_loss_is_double_dqn_masked_by_termination_only_after_the_burn_in() -> None:
    g = torch.Generator().manual_seed(0)
    online, target = torch.randn(40, 3, generator=g), torch.randn(40, 3, generator=g) * 3
    b, steps, gamma = 2, 5, 0.9
    idx = np.array([[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 25]])
    # Sequence 0 ends in a bankruptcy (terminated); sequence 1's last step was truncated (the lane's
    # slice ended): not terminated, so it must still bootstrap from its stored next state 25.
    terminated = torch.zeros(2, steps)
    terminated[0, -1] = 1.0
    batch = SequenceBatch(
        idx=idx,
        position=_positions(g, 2, steps + 1),
        action=torch.tensor([[0, 1, 2, 1, 0], [2, 2, 1, 0, 1]]),
        reward=torch.randn(2, steps, generator=g),
        terminated=terminated,
        hidden=torch.from_numpy(idx[:, :1] - 1.0).T.unsqueeze(-1),
    )
    net, tgt = _TableQ(online), _TableQ(target)
    loss = td_loss(batch, _Frames(), net, net, tgt, b, gamma, torch.device("cpu"))
    expected = _reference(batch, online, target, b, gamma)
    torch.testing.assert_close(loss, expected)
    # Each way the target can go wrong gives another number, so the check above can fail.
    wrong = {
        "vanilla DQN (target argmax)": _reference(batch, online, target, b, gamma, double=False),
        "no termination mask": _reference(
            batch, online, target, b, gamma, mask=torch.zeros(2, steps)
        ),
        "truncation masked as termination": _reference(
            batch,
            online,
            target,
            b,
            gamma,
            mask=torch.ones(2, steps) * (torch.arange(steps) == steps - 1),
        ),
        "loss on the burn-in steps too": _reference(batch, online, target, 0, gamma),
        "max over invalid actions too": _reference(batch, online, target, b, gamma, masked=False),
    }
    for why, value in wrong.items():
        assert abs(float(value) - float(expected)) > 1e-3, why


def _reference_n(
    batch: SequenceBatch,
    online: torch.Tensor,
    target: torch.Tensor,
    b: int,
    gamma: float,
    n: int,
    *,
    stop_at_termination: bool = True,
    discount: float | None = None,
    masked: bool = True,
) -> torch.Tensor:
    """The n-step loss written out per step: sum the rewards one by one, stop at a termination
    (no bootstrap), otherwise bootstrap from the state n steps on with the double-DQN value."""
    q_sa, y = [], []
    for i in range(batch.idx.shape[0]):
        for k in range(b, batch.action.shape[1] - n + 1):
            ret, scale = torch.tensor(0.0), 1.0
            for j in range(n):
                ret = ret + scale * batch.reward[i, k + j]
                scale *= gamma
                if stop_at_termination and batch.terminated[i, k + j]:
                    scale = 0.0
                    break
            s_boot = int(batch.idx[i, k + n])
            a_boot = _best(online[s_boot], batch.position[i, k + n], masked)
            scale = scale if discount is None else discount
            y.append(ret + scale * target[s_boot, a_boot])
            q_sa.append(online[int(batch.idx[i, k]), batch.action[i, k]])
    return F.smooth_l1_loss(torch.stack(q_sa), torch.stack(y))


@pytest.mark.parametrize("n", [1, 3])
def test_n_step_td_loss_matches_the_per_step_reference(n: int) -> None:
    g = torch.Generator().manual_seed(1)
    online, target = torch.randn(60, 3, generator=g), torch.randn(60, 3, generator=g) * 3
    b, learned, gamma = 2, 3, 0.9
    steps = b + learned + n - 1
    idx = np.array([np.arange(10, 11 + steps), np.arange(30, 31 + steps)])
    # Sequence 0 ends in a bankruptcy: the steps whose n-step window reaches it sum the rewards up
    # to it and bootstrap nothing. Sequence 1 ends truncated: it bootstraps from its next state.
    terminated = torch.zeros(2, steps)
    terminated[0, -1] = 1.0
    batch = SequenceBatch(
        idx=idx,
        position=_positions(g, 2, steps + 1),
        action=torch.randint(0, 3, (2, steps), generator=g),
        reward=torch.randn(2, steps, generator=g),
        terminated=terminated,
        hidden=torch.from_numpy(idx[:, :1] - 1.0).T.unsqueeze(-1),
    )
    net, tgt = _TableQ(online), _TableQ(target)
    loss = td_loss(batch, _Frames(), net, net, tgt, b, gamma, torch.device("cpu"), n)
    expected = _reference_n(batch, online, target, b, gamma, n)
    torch.testing.assert_close(loss, expected)
    if n == 1:  # the one-step reference above agrees with the plain Double DQN one
        torch.testing.assert_close(expected, _reference(batch, online, target, b, gamma))
        return
    wrong = {
        "one-step target": _reference_n(batch, online, target, b, gamma, 1),
        "summing past the termination": _reference_n(
            batch, online, target, b, gamma, n, stop_at_termination=False
        ),
        "bootstrap discounted by gamma, not gamma^n": _reference_n(
            batch, online, target, b, gamma, n, discount=gamma
        ),
        "max over invalid actions too": _reference_n(
            batch, online, target, b, gamma, n, masked=False
        ),
    }
    for why, value in wrong.items():
        assert abs(float(value) - float(expected)) > 1e-3, why


def test_no_grad_passes_leave_batchnorm_statistics_alone() -> None:
    """Only the learned pass of a step may move BatchNorm's running statistics: the burn-in and the
    next-state argmax (td_loss) and imitation's burn-in normalise by their batch (train mode, like
    the learned pass) with the running statistics frozen."""
    data = prepare_data(synthetic_candles(300, seed=5), SPEC, "1h", validation_fraction=0.0)
    torch.manual_seed(0)
    policy = build_policy("cnnrnn", SPEC, feat_dim=8, hidden_size=8, norm="batch")
    bns = [m for m in policy.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    def tracked() -> int:
        return int(bns[0].num_batches_tracked)

    rb = SequenceReplay(64, 1, hidden_size=8, seed=0)
    for t in data.train[:20]:
        rb.add(
            np.array([t]),
            np.zeros((1, 2)),
            np.array([0]),
            np.zeros(1),
            np.zeros(1),
            np.array([t + 1]),
            np.zeros((1, 2)),
            np.array([0]),
            np.zeros((1, 8)),
        )
    target = copy.deepcopy(policy).eval()  # as the trainer keeps it
    policy.train()
    before = tracked()
    seen: list[bool] = []
    bns[0].register_forward_pre_hook(lambda m, _: seen.append(m.training))
    mean0 = bns[0].running_mean.clone()
    td_loss(rb.sample(2, 5), data.frames, policy, policy, target, 2, 0.99, torch.device("cpu"))
    assert tracked() == before + 1 and policy.training  # one learned pass; the mode is restored
    assert (
        all(seen) and len(seen) == 3
    )  # burn-in, learned steps, next state: all by batch statistics
    # One learned pass moves the running mean by momentum x (batch mean - running mean), no more.
    assert not torch.equal(bns[0].running_mean, mean0)
    before = tracked()
    imitation_epoch(
        policy,
        policy,
        torch.optim.SGD(policy.parameters(), lr=0.0),
        torch.amp.GradScaler("cpu", enabled=False),
        data.frames,
        data.arrays.close,
        data.train,
        np.zeros(len(data.arrays), np.int64),
        torch.ones(3),
        batch_size=2,
        seq_len=3,
        burn_in=2,
        fee=0.001,
        max_grad_norm=1.0,
        rng=np.random.default_rng(0),
        device=torch.device("cpu"),
        max_updates=1,
    )
    assert tracked() == before + 1


# ---- episodes: terminated, truncated, breaks -----------------------------------------------------


def _candles(n: int = 60) -> pd.DataFrame:
    c = synthetic_candles(n, seed=3)
    # Three hours missing after candle 29 (the stored BTC history has a few such holes).
    c["timestamp"] = c["timestamp"] + pd.to_timedelta(np.where(np.arange(n) >= 30, 3, 0), unit="h")
    return c


def test_env_tells_termination_from_truncation_and_breaks_at_gaps() -> None:
    arrays = CandleArrays(_candles())
    # Decisions 20..39 in one lane, with no chart for 33..35 (an index gap).
    env = ReplayEnv(arrays, np.r_[20:33, 36:40], 1, 1000.0, MarketRules())
    rows = []
    while True:
        (t,), _ = env.observe()
        tr = env.step(np.array([0]))
        rows.append(
            (
                t,
                bool(tr["terminated"][0]),
                bool(tr["truncated"][0]),
                bool(tr["valid"][0]),
                int(tr["episode"][0]),
            )
        )
        if len(rows) == env.steps_per_epoch:
            break
    by_t = {r[0]: r[1:] for r in rows}
    assert by_t[29] == (
        False,
        True,
        False,
        by_t[28][3],
    )  # 29 -> 30 crosses the missing hours: truncated, not learned from
    assert by_t[32] == (False, True, False, by_t[31][3])  # 32 -> 36: no chart at 33
    assert by_t[38] == (
        False,
        True,
        True,
        by_t[37][3],
    )  # the slice ends: truncated, still bootstraps from 39
    assert all(r[1:4] == (False, False, True) for r in rows if r[0] not in (29, 32, 38))
    assert (
        by_t[30][3] != by_t[29][3] and by_t[36][3] != by_t[32][3]
    )  # a new episode after each break


def test_bankruptcy_terminates_and_dropped_steps_are_never_sampled() -> None:
    c = _candles()
    c.loc[45:, ["open", "high", "low", "close"]] *= 0.001  # a crash at the open of candle 45
    env = ReplayEnv(CandleArrays(c), np.r_[40:50], 1, 1000.0, MarketRules())
    rb = SequenceReplay(100, 1, seed=0)
    for t in range(40, 49):
        idx, pos = env.observe()
        tr = env.step(
            np.array([1 if t == 42 else 0])
        )  # buy at 42 (fills at 43), hold into the crash
        rb.add(
            idx,
            pos,
            np.array([0]),
            tr["reward"],
            tr["terminated"],
            tr["next_idx"],
            tr["next_pos"],
            tr["episode"],
            valid=np.array([t != 46]),
        )  # pretend 46 -> 47 crossed a break
        if t == 44:
            assert (
                tr["terminated"][0] and not tr["truncated"][0] and tr["valid"][0]
            )  # bankrupt at the close of 45
            assert env.observe()[1][0][0] == 0.0  # the lane restarted flat
    starts = {int(rb.sample(1, 1).idx[0, 0]) for _ in range(300)}
    assert 46 not in starts and {40, 44, 45, 47} <= starts
    terminated = {
        int(b.idx[0, 0]): float(b.terminated[0, 0]) for b in (rb.sample(1, 1) for _ in range(300))
    }
    assert terminated[44] == 1.0 and terminated[45] == 0.0


# ---- the options on the command line: checked, stored, refused on --resume -----------------------


def _cli(tmp_path, capsys, *argv: str) -> tuple[int, str]:
    from chartrl.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[chart]\nwindow = 40\nheight = 32\nwidth = 48\nma_periods = [5, 10]\nbollinger_period = 10\n"
    )
    with pytest.raises(SystemExit) as exc:
        main(["-c", str(cfg), "--log-level", "warning", "train", "--no-progress", *argv])
    return int(exc.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    "bad,named",
    [
        (["--norm", "bn"], "--norm must be one of batch, group, layer, none, got bn"),
        (["--n-step", "0"], "--n-step must be in [1, 64], got 0"),
        (["--frame-stack", "0"], "--frame-stack must be in [1, 16], got 0"),
        (
            ["--strategy", "gru", "--frame-stack", "2"],
            "--frame-stack 2: only the cnn stacks frames",
        ),
    ],
)
def test_cli_refuses_a_bad_norm_or_n_step(tmp_path, capsys, bad, named) -> None:
    code, err = _cli(tmp_path, capsys, "--synthetic", "400", *bad, "--out", str(tmp_path / "m"))
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m").exists()


def test_cli_options_reach_the_policy_and_model_json(tmp_path, capsys) -> None:
    from chartrl.cli.train_options import NORMS
    from chartrl.strategies import base
    from chartrl.train.checkpoint import load_model

    assert NORMS == base.NORMS
    m = str(tmp_path / "m")
    fast = ["--strategy", "cnnrnn", "--synthetic", "400", "--stages", "dqn", "--epochs", "1"]
    fast += ["--num-envs", "2", "--learning-starts", "16", "--max-steps-per-epoch", "40"]
    code, err = _cli(tmp_path, capsys, *fast, "--norm", "layer", "--dueling", "--n-step", "3")
    assert code == 2 and "give --out" in err
    code, err = _cli(
        tmp_path, capsys, *fast, "--norm", "layer", "--dueling", "--n-step", "3", "--out", m
    )
    assert code == 0, err
    policy, meta = load_model(tmp_path / "m")
    hyper = meta["hyperparameters"]
    assert (hyper["norm"], hyper["dueling"], hyper["n_step"]) == ("layer", True, 3)
    assert meta["policy_config"]["norm"] == "layer" and meta["counters"]["updates"] > 0
    assert all(m.num_groups == 1 for m in policy.modules() if isinstance(m, torch.nn.GroupNorm))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in policy.modules())
    code, err = _cli(tmp_path, capsys, "--resume", m, "--epochs", "2", "--n-step", "5")
    assert code == 2 and "--n-step 5 but the run was trained with n_step = 3" in err, err


SMALL_META = {
    "chart_spec": SPEC,
    "series": {"exchange": "x", "symbol": "BTC/USDT", "timeframe": "1h"},
}


def _small_dqn(**kw) -> tuple:
    """300 synthetic candles and a DQN-only config small enough for a few seconds' run."""
    data = prepare_data(synthetic_candles(300, seed=5), SPEC, "1h", validation_fraction=0.2)
    base = dict(stages=("dqn",), epochs=1, num_envs=2, learning_starts=8, batch_size=2)
    base |= dict(
        train_frequency=2, buffer_size=200, policy_kwargs={"feat_dim": 8, "widths": (4, 8)}
    )
    return data, TrainConfig(**(base | kw))


def test_a_frame_stacked_n_step_cnn_trains_and_loads(tmp_path) -> None:
    from chartrl.train.checkpoint import load_model
    from chartrl.train.dqn import train

    data, cfg = _small_dqn(max_steps_per_epoch=12, n_step=2, frame_stack=2)
    train("cnn", data, cfg, tmp_path / "m", SMALL_META, progress=False)
    policy, saved = load_model(tmp_path / "m")
    assert policy.frame_stack == 2 and policy.encoder.conv[0].in_channels == 6
    assert saved["hyperparameters"]["frame_stack"] == 2 and saved["counters"]["updates"] > 0


@pytest.mark.parametrize("penalty", [0.0, 0.02])
def test_dqn_learns_the_net_return_less_the_trade_penalty_of_each_entry(
    penalty: float, monkeypatch, tmp_path
) -> None:
    """The reward a transition is stored with: the account's net log return, less ``trade_penalty``
    on a filled buy (one per round trip, as the dp oracle charges), times reward_scale."""
    from chartrl.train import dqn

    seen: list[tuple[np.ndarray, ...]] = []
    last: dict[str, dict] = {}
    step = dqn.ReplayEnv.step

    def recording_step(self, actions):
        last["tr"] = step(self, actions)
        return last["tr"]

    class Recording(dqn.SequenceReplay):
        def add(self, idx, pos, action, reward, *args, **kwargs):
            tr = last["tr"]
            seen.append((np.array(action), tr["reward"] * 1.0, np.array(reward), tr["fills"]))
            super().add(idx, pos, action, reward, *args, **kwargs)

    monkeypatch.setattr(dqn.ReplayEnv, "step", recording_step)
    monkeypatch.setattr(dqn, "SequenceReplay", Recording)
    data, cfg = _small_dqn(max_steps_per_epoch=60, trade_penalty=penalty)
    dqn.train("cnn", data, cfg, tmp_path / "m", SMALL_META, progress=False)
    action, raw, stored, fills = (np.concatenate(x) for x in zip(*seen, strict=True))
    entries = (action == 1) & (fills > 0)
    assert entries.sum() >= 3  # exploration buys, so the check below has cases
    expected = (raw - penalty * entries) * cfg.reward_scale
    np.testing.assert_allclose(stored, expected, rtol=1e-6, atol=1e-6)
