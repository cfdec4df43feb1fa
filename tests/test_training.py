"""Training: smoke runs of every policy, determinism, the replay env and memory, the split,
and that the oracle labels never reach a model input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from chartrl.account.base import SimAccount
from chartrl.account.fills import MarketRules
from chartrl.backtest.checkpoint import load_model
from chartrl.backtest.dqn import TrainConfig, epsilon_at, train
from chartrl.backtest.env import ReplayEnv, prepare_data
from chartrl.backtest.evaluation import greedy_run
from chartrl.backtest.imitation import imitation_epoch, imitation_positions
from chartrl.backtest.replay import SequenceReplay
from chartrl.chart.spec import ChartSpec
from chartrl.strategies.oracle import oracle_labels
from chartrl.strategies.registry import build_policy
from chartrl.testing.synthetic import synthetic_candles

SPEC = ChartSpec(window=40, height=32, width=48, ma_periods=(5, 10), bollinger_period=10)
META = {"chart_spec": SPEC, "series": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors gain nothing from threads, and on the shared 2-core machine spinning OpenMP
    threads make each op 10x slower; one thread keeps these tests fast and deterministic."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



def tiny_cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, imitation_epochs=1, num_envs=2, learning_starts=16, batch_size=2, seq_len=3, burn_in=2,
                train_frequency=2, max_steps_per_epoch=12, target_network_frequency=3, buffer_size=400,
                policy_kwargs={"feat_dim": 16})
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def data():
    return prepare_data(synthetic_candles(500, seed=5), SPEC, "1h", validation_fraction=0.2)


@pytest.mark.parametrize("name", ["cnn", "cnnrnn", "gru", "resnet"])
def test_smoke_training_every_policy(name: str, data, tmp_path: Path) -> None:
    kw = {"policy_kwargs": {}} if name == "resnet" else {}
    if name == "resnet":
        # ResNet-18 has 11 M weights: the smallest budget that still runs updates in both stages.
        kw.update(imitation_epochs=1, epochs=1, max_steps_per_epoch=2, batch_size=1, seq_len=2, learning_starts=2, train_frequency=1)
    hist = train(name, data, tiny_cfg(**kw), tmp_path / "m", META, progress=False).history
    dqn = [h for h in hist if h["stage"] == "dqn"]
    assert [h["stage"] for h in hist][0] == "imitation" and dqn
    assert all(math.isfinite(h["loss"]) for h in hist)  # updates happened in every epoch
    assert dqn[-1]["updates"] > 0 and "val_total_return" in dqn[-1]
    policy, meta = load_model(tmp_path / "m", expect_spec=SPEC)
    assert meta["strategy"] == name and meta["hyperparameters"]["seq_len"] == (2 if name == "resnet" else 3)
    assert (tmp_path / "m" / "history.csv").read_text().count("\n") == len(hist) + 1
    assert any((tmp_path / "m" / "tb").iterdir())


def test_same_seed_same_actions_and_weights(data, tmp_path: Path) -> None:
    outs = []
    for run in ("a", "b"):
        train("cnnrnn", data, tiny_cfg(seed=4), tmp_path / run, META, progress=False)
        policy, _ = load_model(tmp_path / run)
        act = greedy_run(policy, data.frames, data.arrays, data.validation, 10_000.0, MarketRules()).actions
        outs.append((act, policy.state_dict()))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    for k, v in outs[0][1].items():
        torch.testing.assert_close(v, outs[1][1][k], rtol=0, atol=0)
    train("cnnrnn", data, tiny_cfg(seed=5), tmp_path / "c", META, progress=False)
    other, _ = load_model(tmp_path / "c")
    assert not torch.equal(other.state_dict()["out.weight"], outs[0][1]["out.weight"])


def test_resume_continues_to_the_total(data, tmp_path: Path) -> None:
    train("cnn", data, tiny_cfg(epochs=1), tmp_path / "m", META, progress=False)
    hist = train("cnn", data, tiny_cfg(epochs=2), tmp_path / "m", META, progress=False, resume=True).history
    assert [(h["stage"], int(h["epoch"])) for h in hist] == [("imitation", 1), ("dqn", 1), ("dqn", 2)]
    _, meta = load_model(tmp_path / "m")
    assert meta["counters"]["dqn_epochs"] == 2 and meta["counters"]["updates"] > int(hist[1]["updates"])


def test_split_by_date_is_purged_by_one_window(data) -> None:
    assert data.train.max() + 1 < data.validation_start  # the fill candle of the last decision is a training candle
    assert data.validation.min() - SPEC.window + 1 >= data.validation_start  # no validation chart reaches back
    assert np.all(np.diff(data.train) == 1) and np.all(np.diff(data.validation) == 1)


def test_env_reward_is_the_accounts_log_equity_change(data) -> None:
    rules = MarketRules()
    env = ReplayEnv(data.arrays, data.train, 2, 1000.0, rules)
    idx, pos = env.observe()
    assert (pos == 0).all()
    total = np.zeros(2)
    actions = [np.array([1, 0])] + [np.array([0, 0])] * 9  # lane 0 buys then holds, lane 1 stays flat
    for a in actions:
        tr = env.step(a)
        total += tr["reward"]
    assert total[1] == 0.0
    # reference: the same fills through a SimAccount by hand
    acc = SimAccount(1000.0, rules)
    acc.last_price = float(data.arrays.close[idx[0]])
    ref = 0.0
    for i, a in enumerate(actions):
        acc.execute(int(a[0]), data.arrays.candle(int(idx[0]) + i + 1))
        ref += acc.last_reward
    assert total[0] == pytest.approx(ref, rel=1e-5)
    assert env.observe()[1][0][0] == 1.0  # lane 0 now long


def test_replay_sequences_stay_in_one_episode_and_carry_hidden() -> None:
    rb = SequenceReplay(capacity=40, lanes=2, hidden_size=3, seed=0)
    for step in range(30):
        ep = np.array([step // 7, 100])  # lane 0 changes episode every 7 steps
        rb.add(np.array([step, 1000 + step]), np.zeros((2, 2)), np.array([0, 1]), np.ones(2), np.zeros(2),
               np.array([step + 1, 1001 + step]), np.zeros((2, 2)), ep, np.full((2, 3), float(step)))
    for _ in range(20):
        batch = rb.sample(8, 4)
        idx = batch.idx
        assert idx.shape == (8, 5)
        assert np.all(np.diff(idx, axis=1) == 1)  # consecutive, next state appended
        lane0 = idx[:, 0] < 1000
        assert np.all(idx[lane0, 0] // 7 == idx[lane0, 3] // 7)  # never across an episode boundary
        stored = batch.hidden[0, :, 0].numpy()
        np.testing.assert_array_equal(stored, np.where(lane0, idx[:, 0], idx[:, 0] - 1000))


def test_epsilon_decays_exponentially_from_start_to_end() -> None:
    cfg = TrainConfig()
    assert epsilon_at(cfg, 0) == pytest.approx(0.9)
    assert epsilon_at(cfg, 1000) == pytest.approx(0.05 + 0.85 / math.e)
    assert epsilon_at(cfg, 10**7) == pytest.approx(0.05)


def test_oracle_labels_never_reach_the_model_input(tmp_path: Path) -> None:
    """Change candles after t: the labels at t change, the frames and position inputs up to t do not;
    and imitation feeds the model the very same inputs whatever the labels are."""
    base = synthetic_candles(400, seed=9)
    la = oracle_labels(base["close"].to_numpy(), 24)
    t = int(np.flatnonzero(la[250:370] == 2)[0]) + 250  # a local maximum: labelled sell
    later = base.copy()
    later.loc[t + 3 :, ["open", "high", "low", "close"]] *= 1.5  # a big rise right after t
    a = prepare_data(base, SPEC, "1h", validation_fraction=0.0)
    b = prepare_data(later, SPEC, "1h", validation_fraction=0.0)
    lb = oracle_labels(b.arrays.close, 24)
    assert la[t] == 2 and lb[t] == 0  # no longer the window's max: the label at t changed
    ts = np.arange(t - 20, t + 1)
    assert torch.equal(a.frames.get(ts), b.frames.get(ts))
    windows = ts.reshape(3, 7)
    pa = imitation_positions(a.arrays.close, windows, np.random.default_rng(1), 0.001)
    pb = imitation_positions(b.arrays.close, windows, np.random.default_rng(1), 0.001)
    assert torch.equal(pa, pb)

    seen: list[list[torch.Tensor]] = [[], []]

    class Spy(torch.nn.Module):
        recurrent = True

        def __init__(self, inner, log):
            super().__init__()
            self.inner, self.log = inner, log

        def forward(self, frames, position, hidden=None):
            self.log += [frames.clone(), position.clone()]
            return self.inner(frames, position, hidden)

    for k, labels in enumerate((la, np.random.default_rng(0).permutation(la))):
        torch.manual_seed(0)
        spy = Spy(build_policy("cnnrnn", SPEC, feat_dim=8, hidden_size=8), seen[k])
        opt = torch.optim.SGD(spy.parameters(), lr=0.0)
        imitation_epoch(spy, spy, opt, torch.amp.GradScaler("cpu", enabled=False), a.frames, a.arrays.close,
                        a.train, labels, torch.ones(3), batch_size=2, seq_len=3, burn_in=2, fee=0.001,
                        max_grad_norm=1.0, rng=np.random.default_rng(2), device=torch.device("cpu"), max_updates=3)
    assert len(seen[0]) == len(seen[1]) > 0
    for x, y in zip(seen[0], seen[1], strict=True):
        assert torch.equal(x, y)


@pytest.fixture
def _restore_structlog():
    """The CLI configures logging globally (--log-level warning); later tests capture info events."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_cli_train_writes_model_and_refuses_overwrite(tmp_path: Path, capsys, _restore_structlog) -> None:
    from chartrl.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text("[chart]\nwindow = 40\nheight = 32\nwidth = 48\nma_periods = [5, 10]\nbollinger_period = 10\n")
    argv = ["-c", str(cfg), "--log-level", "warning", "train", "--strategy", "cnn", "--synthetic", "500", "--epochs", "1",
            "--imitation-epochs", "0", "--max-steps-per-epoch", "5", "--num-envs", "2", "--out", str(tmp_path / "m"), "--no-progress"]
    with pytest.raises(SystemExit) as ok:
        main(argv)
    assert ok.value.code == 0
    assert "model written to" in capsys.readouterr().out
    _, meta = load_model(tmp_path / "m", expect_spec=SPEC)
    assert meta["data_range"]["candles"] == 500 and meta["series"]["timeframe"] == "1h"
    with pytest.raises(SystemExit) as again:
        main(argv)
    assert again.value.code == 2
    assert "already holds a model" in capsys.readouterr().err


def test_compare_tables_mean_std_over_seeds_and_plots(tmp_path: Path) -> None:
    from chartrl.backtest.compare import markdown_table, plot_curves, summarize

    def run(ret: float) -> list[dict]:
        return [{"stage": "imitation", "epoch": 1, "loss": 1.0, "val_total_return": 0.0},
                {"stage": "dqn", "epoch": 1, "loss": 0.5, "val_total_return": ret / 2, "val_sharpe": 1.0, "val_max_drawdown": 0.1, "val_trades": 4},
                {"stage": "dqn", "epoch": 2, "loss": 0.25, "val_total_return": ret, "val_sharpe": 2.0, "val_max_drawdown": 0.2, "val_trades": 6}]

    hist = {"cnn": [run(0.10), run(0.30)], "gru": [run(-0.1)]}
    summary = summarize(hist)
    assert summary["cnn"]["total_return"]["mean"] == pytest.approx(0.20)
    assert summary["cnn"]["total_return"]["std"] == pytest.approx(0.10)
    assert summary["gru"]["seeds"] == 1 and summary["gru"]["loss"]["mean"] == pytest.approx(0.25)
    table = markdown_table(summary, {"total_return": 0.05, "sharpe": 0.5, "max_drawdown": 0.3, "trades": 1})
    assert "| cnn | 2 | 20.00 ± 10.00 |" in table and "buy & hold" in table
    plot_curves(hist, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_training_validation_and_backtest_runner_agree(data) -> None:
    """The trainer's greedy validation and `chartrl backtest` replay the same candles to the same actions
    and equity: a model's validation score is the backtest's, never a second opinion."""
    from chartrl.backtest.runner import run_backtest

    torch.manual_seed(3)
    policy = build_policy("cnnrnn", SPEC, feat_dim=16).eval()
    with torch.no_grad():  # tilt the random Q head by the position (last inputs) so the untrained net trades
        policy.out.bias.copy_(torch.tensor([0.0, 0.3, 0.0]))
        policy.out.weight[:, -2] += torch.tensor([0.0, -0.6, 0.3])
    rules = MarketRules()
    v = data.validation
    run = greedy_run(policy, data.frames, data.arrays, v, 10_000.0, rules)
    bt = run_backtest(policy, data.candles, SPEC, rules, span=(int(v[0]), int(v[-1]) + 1), initial_cash=10_000.0)
    assert len(bt.actions) == len(run.actions)
    np.testing.assert_array_equal(bt.actions, run.actions)
    np.testing.assert_allclose(bt.equity[1:], run.equity, rtol=1e-9)
    assert run.fills >= 2  # a net that never trades would prove nothing
