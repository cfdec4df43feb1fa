"""The neural policies: shapes, hidden-state carrying, BatchNorm in eval, registry."""

from __future__ import annotations

import pytest
import torch

from chartrl.chart.spec import ChartSpec
from chartrl.errors import UsageError
from chartrl.strategies import registry
from chartrl.strategies.registry import build_policy

SPEC = ChartSpec(window=40, height=32, width=48, ma_periods=(5, 10), bollinger_period=10)
NAMES = ["cnn", "cnnrnn", "gru", "resnet"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors gain nothing from threads, and on the shared 2-core machine spinning OpenMP
    threads make each op 10x slower; one thread keeps these tests fast and deterministic."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def frames(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*shape, 3, 32, 48), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_step_and_sequence(name: str) -> None:
    torch.manual_seed(0)
    p = build_policy(name, SPEC).eval()
    q, h = p(frames(5), torch.zeros(5, 2))
    assert q.shape == (5, 3) and torch.isfinite(q).all()
    qs, hs = p(frames(2, 4), torch.zeros(2, 4, 2))
    assert qs.shape == (2, 4, 3)
    assert (h is None) == (not p.recurrent)
    if p.recurrent:
        assert h.shape == (1, 5, p.hidden_size) and hs.shape == (1, 2, p.hidden_size)


@pytest.mark.parametrize("name", ["cnnrnn", "gru"])
def test_stepping_with_carried_hidden_equals_sequence(name: str) -> None:
    torch.manual_seed(0)
    p = build_policy(name, SPEC).eval()
    x, pos = frames(2, 6, seed=1), torch.rand(2, 6, 2)
    with torch.no_grad():
        q_seq, h_seq = p(x, pos)
        h = None
        steps = []
        for t in range(6):
            q, h = p(x[:, t], pos[:, t], h)
            steps.append(q)
    torch.testing.assert_close(torch.stack(steps, 1), q_seq, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h, h_seq, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name,carries", [("cnnrnn", True), ("gru", True), ("cnn", False), ("resnet", False)]
)
def test_output_at_t_depends_on_frame_t_minus_1_only_when_recurrent(
    name: str, carries: bool
) -> None:
    torch.manual_seed(0)
    p = build_policy(name, SPEC).eval()
    a = frames(1, 3, seed=2)
    b = a.clone()
    b[:, 1] = frames(1, seed=3)  # only frame t-1 differs
    pos = torch.zeros(1, 3, 2)
    with torch.no_grad():
        h_a = h_b = None
        for t in range(3):
            qa, h_a = p(a[:, t], pos[:, t], h_a)  # step by step, the hidden state handed back in
            qb, h_b = p(b[:, t], pos[:, t], h_b)
    assert (not torch.allclose(qa, qb, atol=1e-6)) == carries


def test_hidden_none_starts_from_zero_state() -> None:
    p = build_policy("cnnrnn", SPEC).eval()
    x = frames(3)
    with torch.no_grad():
        q1, _ = p(x, torch.zeros(3, 2), None)
        q2, _ = p(x, torch.zeros(3, 2), p.initial_hidden(3))
    torch.testing.assert_close(q1, q2)


def test_position_features_reach_the_q_values() -> None:
    torch.manual_seed(0)
    for name in ("cnn", "cnnrnn"):
        p = build_policy(name, SPEC).eval()
        x = frames(1)
        with torch.no_grad():
            flat, _ = p(x, torch.tensor([[0.0, 0.0]]))
            long, _ = p(x, torch.tensor([[1.0, 0.05]]))
        assert not torch.allclose(flat, long)


def test_eval_mode_batchnorm_is_batch_independent() -> None:
    torch.manual_seed(0)
    p = build_policy("cnn", SPEC, norm="batch")
    p.train()
    with torch.no_grad():  # move running stats away from their init so eval differs from identity
        for _ in range(3):
            p(frames(8, seed=5), torch.zeros(8, 2))
    p.eval()
    x = frames(6, seed=4)
    with torch.no_grad():
        alone, _ = p(x[:1], torch.zeros(1, 2))
        batch, _ = p(x, torch.zeros(6, 2))
    torch.testing.assert_close(alone, batch[:1], rtol=1e-4, atol=1e-5)


def test_frozen_bn_stats_normalises_by_the_batch_and_keeps_the_running_statistics() -> None:
    from chartrl.strategies.base import frozen_bn_stats

    torch.manual_seed(0)
    p = build_policy("cnnrnn", SPEC, norm="batch").train()
    bns = [m for m in p.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    x, pos = frames(6, seed=4), torch.zeros(6, 2)
    state = {k: v.clone() for k, v in p.state_dict().items()}
    with torch.no_grad(), frozen_bn_stats(p):
        frozen, _ = p(x, pos)
    after = p.state_dict()
    assert all(
        torch.equal(state[k], after[k]) for k in state
    )  # running mean/var and counters untouched
    assert all(m.momentum == 0.1 for m in bns)  # restored
    with torch.no_grad():
        plain, _ = p(x, pos)  # the same pass, allowed to update the statistics
    torch.testing.assert_close(
        frozen, plain
    )  # both normalised by the batch (train mode), not by the defaults
    assert not torch.equal(
        bns[0].running_mean, state[[k for k in state if k.endswith("running_mean")][0]]
    )


def test_diff_frame_doubles_input_channels() -> None:
    p = build_policy("cnnrnn", SPEC.model_copy(update={"diff_frame": True}))
    assert p.config["in_channels"] == 6
    q, _ = p.eval()(torch.randint(0, 256, (2, 6, 32, 48), dtype=torch.uint8), torch.zeros(2, 2))
    assert q.shape == (2, 3)


def test_resnet_is_resnet18_with_small_stem() -> None:
    p = build_policy("resnet", SPEC)
    conv1 = p.backbone.conv1
    assert conv1.kernel_size == (3, 3) and conv1.in_channels == 3
    assert isinstance(p.backbone.maxpool, torch.nn.Identity)
    assert len(p.backbone.layer4) == 2  # resnet18 has two basic blocks per stage


def test_registry_lists_neural_and_rules_and_refuses_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chartrl.strategies import rules

    monkeypatch.setitem(rules.RULES, "always_hold", lambda **kw: "rule")
    names = registry.available()
    assert names[:4] == NAMES and {"always_hold", "buyhold", "sma", "random", "oracle"} <= set(
        names
    )
    assert registry.build_rule("always_hold") == "rule"
    assert not registry.is_neural("always_hold")
    with pytest.raises(UsageError, match="unknown neural strategy 'lstm'"):
        build_policy("lstm", SPEC)


def test_cnn_q_head_is_linear_after_the_conv_blocks() -> None:
    torch.manual_seed(0)
    p = build_policy("cnn", SPEC).eval()
    convs = [m for m in p.encoder.conv if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in p.encoder.conv if isinstance(m, torch.nn.GroupNorm)]
    assert len(convs) == len(norms) == 3
    assert isinstance(p.q.net, torch.nn.Linear) and (p.q.net.in_features, p.q.net.out_features) == (
        p.encoder.feat_dim + 2,
        3,
    )
    # Linear in what the head reads: Q is affine in the position features for a fixed chart.
    x, a, b = frames(1), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.3]])
    with torch.no_grad():
        qa, qb, qm = p(x, a)[0], p(x, b)[0], p(x, (a + b) / 2)[0]
    torch.testing.assert_close(qm, (qa + qb) / 2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["buyhold", "sma", "random", "oracle"])
def test_rule_baselines_answer_the_policy_interface(name: str) -> None:
    """forward(frames, position, hidden) -> (q[3], hidden): one-hot Q of decide(t, position), the
    candle index carried as the hidden state, step by step or as a sequence; the same as decide."""
    from chartrl.testing.synthetic import synthetic_candles

    rule = registry.build_rule(name)  # one registry: RULES in strategies.rules
    candles = synthetic_candles(200, seed=1)
    rule.prepare(candles)
    pos = torch.tensor([[[0.0, 0.0]] * 30, [[1.0, 0.02]] * 30])  # one flat run, one long run
    hidden = rule.initial_hidden(2, start=100)
    steps = []
    for k in range(30):
        q, hidden = rule(None, pos[:, k], hidden)
        assert q.shape == (2, 3) and torch.equal(q.sum(-1), torch.ones(2))
        steps.append(q)
    assert hidden.tolist() == [130, 130]
    seq, h_seq = rule(None, pos, rule.initial_hidden(2, start=100))
    assert (
        seq.shape == (2, 30, 3)
        and torch.equal(seq, torch.stack(steps, 1))
        and torch.equal(h_seq, hidden)
    )
    expect = [
        [rule.decide(100 + k, tuple(pos[b, k].tolist())) for k in range(30)] for b in range(2)
    ]
    assert seq.argmax(-1).tolist() == expect
    with pytest.raises(ValueError, match="initial_hidden"):
        rule(None, pos[:, 0], None)


def test_make_rule_builds_from_the_one_registry() -> None:
    from chartrl.strategies import rules

    assert set(rules.RULES) <= set(registry.available())
    assert isinstance(rules.make_rule("sma", sma=(3, 9)), rules.SMACrossover) and rules.make_rule(
        "sma", sma=(3, 9)
    ).params() == {"fast": 3, "slow": 9}
    assert rules.make_rule("oracle", oracle="extrema", oracle_window=5).params() == {
        "method": "extrema",
        "window": 5,
    }
    with pytest.raises(UsageError, match="unknown strategy 'nope'"):
        rules.make_rule("nope")


# ---- normalisation: one function for acting, learning and the target; old models stay BatchNorm


@pytest.mark.parametrize("name", NAMES)
def test_default_norm_acts_learns_and_targets_the_same_function(name: str) -> None:
    import copy

    from chartrl.train.dqn import TrainConfig

    torch.manual_seed(0)
    p = build_policy(name, SPEC, norm=TrainConfig().norm)
    x, pos = frames(6, seed=4), torch.rand(6, 2)
    with torch.no_grad():
        p.train()
        for _ in range(3):  # learned passes: BatchNorm would move its running statistics here
            learned, _ = p(x, pos)
        target = copy.deepcopy(p).eval()
        acted, _ = p.eval()(x, pos)
        alone, _ = p(x[:1], pos[:1])  # the daemon's batch of one
        targeted, _ = target(x, pos)
    torch.testing.assert_close(learned, acted, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(targeted, acted, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone, acted[:1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "norm,kind",
    [("batch", "BatchNorm2d"), ("group", "GroupNorm"), ("layer", "GroupNorm"), ("none", None)],
)
@pytest.mark.parametrize("name", NAMES)
def test_every_policy_takes_every_norm(name: str, norm: str, kind: str | None) -> None:
    p = build_policy(name, SPEC, norm=norm)
    found = {type(m).__name__ for m in p.modules()} & {"BatchNorm2d", "GroupNorm"}
    assert found == ({kind} if kind else set()) and p.config["norm"] == norm
    if norm == "layer":
        assert all(m.num_groups == 1 for m in p.modules() if isinstance(m, torch.nn.GroupNorm))
    q, _ = p.eval()(frames(2), torch.zeros(2, 2))
    assert q.shape == (2, 3) and torch.isfinite(q).all()
    with pytest.raises(ValueError, match="norm 'bn': use one of batch, group, layer, none"):
        build_policy(name, SPEC, norm="bn")


@pytest.mark.parametrize("name", ["cnn", "gru"])
def test_a_model_saved_before_norm_existed_loads_as_batchnorm(name: str, tmp_path) -> None:
    import json

    from chartrl.train.checkpoint import load_model, save_model
    from chartrl.train.dqn import train_config

    torch.manual_seed(0)
    old = build_policy(name, SPEC, norm="batch").train()
    with torch.no_grad():  # running statistics away from their defaults, as a trained model's
        old(frames(8, seed=5), torch.zeros(8, 2))
    series = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}
    save_model(tmp_path, old, {"chart_spec": SPEC, "series": series, "hyperparameters": {}})
    meta = json.loads((tmp_path / "model.json").read_text())
    for key in ("norm", "dueling"):  # what an older chartrl wrote
        del meta["policy_config"][key]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    policy, _ = load_model(tmp_path)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in policy.modules())
    x, pos = frames(3, seed=1), torch.zeros(3, 2)
    with torch.no_grad():
        torch.testing.assert_close(policy(x, pos)[0], old.eval()(x, pos)[0])
    cfg = train_config({"seed": 2})  # its hyperparameters: the behaviour it was trained with
    assert (cfg.norm, cfg.dueling, cfg.n_step) == ("batch", False, 1)


@pytest.mark.parametrize("name", ["cnn", "cnnrnn"])
def test_dueling_head_is_value_plus_centred_advantage(name: str) -> None:
    torch.manual_seed(0)
    p = build_policy(name, SPEC, dueling=True).eval()
    head = p.q.net if name == "cnn" else p.out
    x, pos = frames(2), torch.rand(2, 2)
    captured = {}
    head.register_forward_hook(lambda m, i, o: captured.update(x=i[0]))
    with torch.no_grad():
        q, _ = p(x, pos)
        v, a = head.value(captured["x"]), head.advantage(captured["x"])
    ref = v + a - a.mean(-1, keepdim=True)  # recurrent: (B, 1, 3), one step of a sequence
    torch.testing.assert_close(q, ref.reshape(q.shape))
    torch.testing.assert_close(q.mean(-1), v.reshape(q.shape[:-1]))  # V is the mean Q


# ---- cnn --frame-stack K: the last K charts as channels, stacked alike by every driver ------------


def test_frame_stack_indices_repeat_the_oldest_chart_before_a_start_or_a_gap() -> None:
    import numpy as np

    from chartrl.strategies.base import FrameStack

    class Source:
        valid_indices = np.array([3, 4, 6, 7, 8])  # no chart at 5 (a bad candle, say)

    stack = FrameStack(Source(), 3)
    got = stack.indices(np.array([3, 4, 7, 8]))
    np.testing.assert_array_equal(got, [[3, 3, 3], [3, 3, 4], [6, 6, 7], [6, 7, 8]])


def test_a_stacked_cnn_remembers_k_charts_and_no_more() -> None:
    import numpy as np

    from chartrl.strategies.base import FrameStack

    class Cache:  # FrameCache's interface: frames by candle index
        valid = np.ones(20, dtype=bool)

        def __init__(self, frames: torch.Tensor) -> None:
            self.frames = frames

        def get(self, idx: np.ndarray) -> torch.Tensor:
            return self.frames[torch.from_numpy(np.asarray(idx).reshape(-1))]

    torch.manual_seed(0)
    p = build_policy("cnn", SPEC, frame_stack=3).eval()
    assert p.encoder.conv[0].in_channels == 9 and p.config["frame_stack"] == 3
    base = frames(20, seed=1)
    t, pos = np.array([10]), torch.zeros(1, 2)

    def q(changed: int | None) -> torch.Tensor:
        f = base.clone()
        if changed is not None:
            f[changed] = 255 - f[changed]
        with torch.no_grad():
            return p(FrameStack(Cache(f), 3).get(t), pos)[0]

    plain = q(None)
    assert not torch.allclose(q(8), plain)  # the chart two candles back is seen
    torch.testing.assert_close(q(7), plain)  # three back is not
    torch.testing.assert_close(q(11), plain)  # and nothing after t


def test_a_stacked_cnn_validates_as_it_backtests(tmp_path) -> None:
    import numpy as np

    from chartrl.account.fills import MarketRules
    from chartrl.backtest.runner import run_backtest
    from chartrl.strategies.base import stack_frames
    from chartrl.testing.synthetic import synthetic_candles
    from chartrl.train.env import prepare_data
    from chartrl.train.evaluation import greedy_run

    data = prepare_data(synthetic_candles(300, seed=5), SPEC, "1h", validation_fraction=0.3)
    torch.manual_seed(3)
    policy = build_policy("cnn", SPEC, feat_dim=16, frame_stack=3).eval()
    with torch.no_grad():  # tilt the random Q head by the position so the untrained net trades
        policy.q.net.bias.copy_(torch.tensor([0.0, 0.3, 0.0]))
        policy.q.net.weight[:, -2] += torch.tensor([0.0, -0.6, 0.3])
    v, rules = data.validation, MarketRules()
    run = greedy_run(policy, stack_frames(data.frames, policy), data.arrays, v, 10_000.0, rules)
    bt = run_backtest(policy, data.candles, SPEC, rules, span=(int(v[0]), int(v[-1]) + 1))
    np.testing.assert_array_equal(bt.actions, run.actions)
    assert len(run.fills) >= 3  # a net that never trades would prove nothing
    # Unstacked frames would be another input: the backtest must not feed them.
    with pytest.raises(RuntimeError):
        greedy_run(policy, data.frames, data.arrays, v, 10_000.0, rules)
