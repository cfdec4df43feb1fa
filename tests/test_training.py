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
from chartrl.backtest.metrics import result_metrics, round_trips
from chartrl.chart.spec import ChartSpec
from chartrl.strategies.oracle import oracle_labels
from chartrl.strategies.registry import build_policy
from chartrl.testing.synthetic import synthetic_candles
from chartrl.timeframe import periods_per_year
from chartrl.train.checkpoint import load_model
from chartrl.train.dqn import TrainConfig, train
from chartrl.train.env import ReplayEnv, prepare_data
from chartrl.train.evaluation import GreedyRun, greedy_run, run_metrics
from chartrl.train.imitation import class_weights, imitation_epoch, imitation_positions
from chartrl.train.replay import SequenceReplay

SPEC = ChartSpec(window=40, height=32, width=48, ma_periods=(5, 10), bollinger_period=10)
META = {
    "chart_spec": SPEC,
    "series": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"},
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors gain nothing from threads, and on the shared 2-core machine spinning OpenMP
    threads make each op 10x slower; one thread keeps these tests fast and deterministic."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY = dict(
    epochs=2,
    imitation_epochs=1,
    num_envs=2,
    learning_starts=16,
    batch_size=2,
    seq_len=3,
    burn_in=2,
    train_frequency=2,
    max_steps_per_epoch=12,
    target_network_frequency=3,
    buffer_size=400,
    policy_kwargs={"feat_dim": 16},
)
"""The tiny training budget the smoke tests share (as TrainConfig fields)."""


def tiny_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


@pytest.fixture(scope="module")
def data():
    return prepare_data(synthetic_candles(500, seed=5), SPEC, "1h", validation_fraction=0.2)


@pytest.mark.parametrize("name", ["cnn", "cnnrnn", "gru", "resnet"])
def test_smoke_training_every_policy(name: str, data, tmp_path: Path) -> None:
    kw = {"policy_kwargs": {}} if name == "resnet" else {}
    if name == "resnet":
        # ResNet-18 has 11 M weights: the smallest budget that still runs updates in both stages.
        kw.update(
            imitation_epochs=1,
            epochs=1,
            max_steps_per_epoch=2,
            batch_size=1,
            seq_len=2,
            learning_starts=2,
            train_frequency=1,
        )
    hist = train(name, data, tiny_cfg(**kw), tmp_path / "m", META, progress=False).history
    dqn = [h for h in hist if h["stage"] == "dqn"]
    assert [h["stage"] for h in hist][0] == "imitation" and dqn
    assert all(math.isfinite(h["loss"]) for h in hist)  # updates happened in every epoch
    assert dqn[-1]["updates"] > 0 and "val_total_return" in dqn[-1]
    policy, meta = load_model(tmp_path / "m", expect_spec=SPEC)
    assert meta["strategy"] == name and meta["hyperparameters"]["seq_len"] == (
        2 if name == "resnet" else 3
    )
    assert meta["hyperparameters"]["eps_decay"] > 0  # the exploration schedule used is on record
    assert (tmp_path / "m" / "history.csv").read_text().count("\n") == len(hist) + 1
    assert any((tmp_path / "m" / "tb").iterdir())


def test_smoke_imitation_learns_the_oracle_and_validation_scores_the_saved_model(
    tmp_path: Path,
) -> None:
    """A smoke run that can fail for a reason: after imitation the policy fits the oracle labels
    better than its untrained self and buys and sells, its greedy validation trades, and the
    validation row is the backtest metrics of exactly the model saved."""
    from chartrl.train.evaluation import run_metrics

    data = prepare_data(
        synthetic_candles(800, seed=5), SPEC, "1h", validation_fraction=0.3
    )  # 200 validation candles
    cfg = tiny_cfg(
        stages=("imitation",),
        imitation_epochs=6,  # under the default GroupNorm the fit needs more epochs than BatchNorm
        max_steps_per_epoch=None,
        oracle_window=3,
        oracle="extrema",  # the old labels and weights: this checks the stage fits what it is given
        imitation_weights="inverse",
    )
    torch.manual_seed(cfg.seed)
    untrained = build_policy("cnnrnn", SPEC, **cfg.policy_kwargs)  # the trainer's initial weights
    hist = train("cnnrnn", data, cfg, tmp_path / "m", META, progress=False).history
    saved, _ = load_model(tmp_path / "m")
    labels = oracle_labels(data.arrays.close[: data.validation_start], cfg.oracle_window)[
        data.train
    ]
    weights = class_weights(labels)

    def fit(policy: torch.nn.Module) -> tuple[float, set[int]]:
        with torch.no_grad():  # the whole training part as one sequence, hidden state carried
            q, _ = policy.eval()(
                data.frames.get(data.train)[None], torch.zeros(1, len(data.train), 2)
            )
        return float(
            torch.nn.functional.cross_entropy(q[0], torch.from_numpy(labels), weight=weights)
        ), set(q[0].argmax(-1).tolist())

    (before, _), (after, predicted) = fit(untrained), fit(saved)
    assert after < 0.9 * before and predicted == {0, 1, 2}
    run = greedy_run(saved, data.frames, data.arrays, data.validation, 10_000.0, MarketRules())
    assert (
        len(run.fills) > 0 and hist[-1]["val_trades"] > 0
    )  # a validation that never trades would prove nothing
    val = run_metrics(run, "1h")
    assert {k: hist[-1][f"val_{k}"] for k in val} == pytest.approx(val)


@pytest.mark.parametrize("name", ["cnn", "cnnrnn", "gru", "resnet"])
def test_same_seed_same_actions_and_weights(name: str, data, tmp_path: Path) -> None:
    kw = {}
    if name == "resnet":  # the tiniest budget that still updates in both stages
        kw = dict(
            policy_kwargs={},
            epochs=1,
            max_steps_per_epoch=2,
            batch_size=1,
            seq_len=2,
            learning_starts=2,
            train_frequency=1,
        )
    outs = []
    for run in ("a", "b"):
        train(name, data, tiny_cfg(seed=4, **kw), tmp_path / run, META, progress=False)
        policy, _ = load_model(tmp_path / run)
        act = greedy_run(
            policy, data.frames, data.arrays, data.validation, 10_000.0, MarketRules()
        ).actions
        outs.append((act, policy.state_dict()))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    for k, v in outs[0][1].items():
        torch.testing.assert_close(v, outs[1][1][k], rtol=0, atol=0)
    train(name, data, tiny_cfg(seed=5, **kw), tmp_path / "c", META, progress=False)
    other, _ = load_model(tmp_path / "c")
    assert any(
        not torch.equal(v, outs[0][1][k]) for k, v in other.state_dict().items()
    )  # the seed matters


def test_resume_continues_to_the_total(data, tmp_path: Path) -> None:
    train("cnn", data, tiny_cfg(epochs=1), tmp_path / "m", META, progress=False)
    hist = train(
        "cnn", data, tiny_cfg(epochs=2), tmp_path / "m", META, progress=False, resume=True
    ).history
    assert [(h["stage"], int(h["epoch"])) for h in hist if h["kind"] == "epoch"] == [
        ("imitation", 1),
        ("dqn", 1),
        ("dqn", 2),
    ]
    _, meta = load_model(tmp_path / "m")
    assert meta["counters"]["dqn_epochs"] == 2 and meta["counters"]["updates"] > int(
        hist[1]["updates"]
    )


def test_split_by_date_is_purged_by_one_window(data) -> None:
    assert (
        data.train.max() + 1 < data.validation_start
    )  # the fill candle of the last decision is a training candle
    assert (
        data.validation.min() - SPEC.window + 1 >= data.validation_start
    )  # no validation chart reaches back
    assert np.all(np.diff(data.train) == 1) and np.all(np.diff(data.validation) == 1)


def test_env_reward_is_the_accounts_log_equity_change(data) -> None:
    rules = MarketRules()
    env = ReplayEnv(data.arrays, data.train, 2, 1000.0, rules)
    idx, pos = env.observe()
    assert (pos == 0).all()
    total = np.zeros(2)
    actions = [np.array([1, 0])] + [
        np.array([0, 0])
    ] * 9  # lane 0 buys then holds, lane 1 stays flat
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
        rb.add(
            np.array([step, 1000 + step]),
            np.zeros((2, 2)),
            np.array([0, 1]),
            np.ones(2),
            np.zeros(2),
            np.array([step + 1, 1001 + step]),
            np.zeros((2, 2)),
            ep,
            np.full((2, 3), float(step)),
        )
    for _ in range(20):
        batch = rb.sample(8, 4)
        idx = batch.idx
        assert idx.shape == (8, 5)
        assert np.all(np.diff(idx, axis=1) == 1)  # consecutive, next state appended
        lane0 = idx[:, 0] < 1000
        assert np.all(idx[lane0, 0] // 7 == idx[lane0, 3] // 7)  # never across an episode boundary
        stored = batch.hidden[0, :, 0].numpy()
        np.testing.assert_array_equal(stored, np.where(lane0, idx[:, 0], idx[:, 0] - 1000))


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
        imitation_epoch(
            spy,
            spy,
            opt,
            torch.amp.GradScaler("cpu", enabled=False),
            a.frames,
            a.arrays.close,
            a.train,
            labels,
            torch.ones(3),
            batch_size=2,
            seq_len=3,
            burn_in=2,
            fee=0.001,
            max_grad_norm=1.0,
            rng=np.random.default_rng(2),
            device=torch.device("cpu"),
            max_updates=3,
        )
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


def test_cli_train_writes_model_and_refuses_overwrite(
    tmp_path: Path, capsys, _restore_structlog
) -> None:
    from chartrl.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[chart]\nwindow = 40\nheight = 32\nwidth = 48\nma_periods = [5, 10]\nbollinger_period = 10\n"
    )
    argv = [
        "-c",
        str(cfg),
        "--log-level",
        "warning",
        "train",
        "--strategy",
        "cnn",
        "--synthetic",
        "500",
        "--epochs",
        "1",
        "--imitation-epochs",
        "0",
        "--max-steps-per-epoch",
        "5",
        "--num-envs",
        "2",
        "--out",
        str(tmp_path / "m"),
        "--no-progress",
    ]
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


def test_training_validation_and_backtest_runner_agree(data) -> None:
    """The trainer's greedy validation and `chartrl backtest` replay the same candles to the same actions
    and equity: a model's validation score is the backtest's, never a second opinion."""
    from chartrl.backtest.runner import run_backtest

    torch.manual_seed(3)
    policy = build_policy("cnnrnn", SPEC, feat_dim=16).eval()
    with (
        torch.no_grad()
    ):  # tilt the random Q head by the position (last inputs) so the untrained net trades
        policy.out.bias.copy_(torch.tensor([0.0, 0.3, 0.0]))
        policy.out.weight[:, -2] += torch.tensor([0.0, -0.6, 0.3])
    rules = MarketRules()
    v = data.validation
    run = greedy_run(policy, data.frames, data.arrays, v, 10_000.0, rules)
    bt = run_backtest(
        policy, data.candles, SPEC, rules, span=(int(v[0]), int(v[-1]) + 1), initial_cash=10_000.0
    )
    assert len(bt.actions) == len(run.actions)
    np.testing.assert_array_equal(bt.actions, run.actions)
    np.testing.assert_allclose(bt.equity, run.equity, rtol=1e-9)
    assert len(run.fills) >= 3  # a net that never trades would prove nothing
    # The validation figures are the backtest's: trades = round trips, the same Sharpe.
    val, ref = (
        run_metrics(run, data.timeframe),
        result_metrics(bt, periods_per_year(data.timeframe)),
    )
    assert val == pytest.approx({k: ref[k] for k in val}, rel=1e-9)
    assert val["trades"] == len(round_trips(run.fills)) < len(run.fills)


def test_validation_of_buy_and_hold_counts_no_trade_and_a_flat_run_has_no_sharpe(data) -> None:
    from chartrl.train.compare import buy_and_hold, markdown_table

    ref = buy_and_hold(data, MarketRules(), 10_000.0)
    assert ref["trades"] == 0 and ref["sharpe"] is not None  # one buy, never closed: no round trip
    assert "val round trips" in markdown_table({}, ref)
    flat = GreedyRun(np.zeros(3, np.int64), np.full(4, 10_000.0), np.zeros(4), [])
    assert run_metrics(flat, "1h")["sharpe"] is None  # as in a backtest: undefined, not 0


# ---- chartrl train: options checked up front, --resume keeps the run as it was -----------------


TINY_TOML = (
    "[chart]\nwindow = 40\nheight = 32\nwidth = 48\nma_periods = [5, 10]\nbollinger_period = 10\n"
)


def _cli(tmp_path: Path, capsys, *argv: str) -> tuple[int, str, str]:
    from chartrl.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY_TOML)
    with pytest.raises(SystemExit) as exc:
        main(["-c", str(cfg), "--log-level", "warning", "train", "--no-progress", *argv])
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


FAST = (
    "--strategy",
    "cnn",
    "--epochs",
    "1",
    "--imitation-epochs",
    "1",
    "--max-steps-per-epoch",
    "4",
    "--num-envs",
    "2",
    "--learning-starts",
    "4",
)


@pytest.mark.parametrize(
    "bad,named",
    [
        (["--max-steps-per-epoch", "0"], "--max-steps-per-epoch must be >= 1"),
        (["--oracle-window", "0"], "--oracle-window must be >= 1"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--eps-decay", "0"], "--eps-decay must be > 0"),
        (
            ["--num-envs", "5000"],
            "--num-envs 5000",
        ),  # known only once the data is split: still before any training
        (["--from", "2020-01-05"], "--synthetic makes its own"),
    ],
)
def test_cli_train_refuses_bad_options_up_front(
    tmp_path: Path, capsys, _restore_structlog, bad: list[str], named: str
) -> None:
    code, _, err = _cli(
        tmp_path, capsys, *FAST, "--synthetic", "500", *bad, "--out", str(tmp_path / "m")
    )
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert "unexpected" not in err.lower() and not (tmp_path / "m").exists()


def test_cli_synthetic_run_has_a_synthetic_series(
    tmp_path: Path, capsys, _restore_structlog
) -> None:
    from chartrl.errors import CheckpointError

    code, _, err = _cli(tmp_path, capsys, *FAST, "--synthetic", "500", "--out", str(tmp_path / "m"))
    assert code == 0, err
    _, meta = load_model(tmp_path / "m")
    assert meta["series"]["exchange"] == "synthetic" and meta["data_range"]["source"].startswith(
        "synthetic"
    )
    fills = meta["fills"]  # no market to take precision and minimums from, and model.json says so
    assert (
        fills["market_info"].startswith("none: synthetic candles have no market")
        and fills["amount_step"] is None
    )
    with pytest.raises(
        CheckpointError, match="exchange: 'synthetic' != 'binance'"
    ):  # what a backtest or the daemon asks
        load_model(tmp_path / "m", expect_series=("binance", "BTC/USDT", "1h"))


def test_cli_resume_keeps_hyperparameters_and_refuses_changes(
    tmp_path: Path, capsys, _restore_structlog
) -> None:
    m = str(tmp_path / "m")
    code, _, err = _cli(
        tmp_path,
        capsys,
        *FAST,
        "--synthetic",
        "500",
        "--oracle-window",
        "12",
        "--seed",
        "3",
        "--validation-fraction",
        "0.2",
        "--out",
        m,
    )
    assert code == 0, err
    for option, value, field in (
        ("--oracle-window", "24", "oracle_window"),
        ("--validation-fraction", "0.15", "validation_fraction"),
        ("--num-envs", "4", "num_envs"),
        ("--seed", "1", "seed"),
        ("--learning-starts", "8", "learning_starts"),
    ):
        code, _, err = _cli(tmp_path, capsys, "--resume", m, "--epochs", "2", option, value)
        assert (
            code == 2 and option in err and field in err and len(err.strip().splitlines()) == 1
        ), err
    code, _, err = _cli(tmp_path, capsys, "--resume", m, "--synthetic", "600")
    assert code == 2 and "candles 500" in err, err
    code, _, err = _cli(tmp_path, capsys, "--resume", m, "--epochs", "0")
    assert code == 2 and "1 DQN epochs are done" in err, err
    code, _, err = _cli(
        tmp_path, capsys, "--resume", m, "--epochs", "2", "--seed", "3"
    )  # the same value is no change
    assert code == 0, err
    _, meta = load_model(tmp_path / "m")
    h = meta["hyperparameters"]
    assert (h["oracle_window"], h["seed"], h["validation_fraction"], h["epochs"]) == (12, 3, 0.2, 2)
    assert meta["counters"]["dqn_epochs"] == 2 and meta["data_range"]["candles"] == 500


def test_cli_resume_reads_the_saved_range_from_a_grown_store(
    tmp_path: Path, capsys, _restore_structlog, monkeypatch
) -> None:
    from chartrl.market.markets import save_market
    from chartrl.market.store import CandleStore

    data_dir = tmp_path / "data"
    monkeypatch.setenv("CHARTRL_DATA_DIR", str(data_dir))
    candles = synthetic_candles(700, seed=2)
    CandleStore(data_dir).ingest("binance", "BTC/USDT", "1h", candles.iloc[:500], source="test")
    market = {
        "symbol": "BTC/USDT",
        "taker": 0.00075,
        "precision": {"amount": 1e-05},
        "limits": {"cost": {"min": 5.0}},
    }
    save_market(data_dir, "binance", "BTC/USDT", market, 4)
    m = str(tmp_path / "m")
    code, _, err = _cli(tmp_path, capsys, *FAST, "--out", m)
    assert code == 0, err
    # Trained and validated under the fills `chartrl backtest` and the paper account use (config fee).
    fills = load_model(tmp_path / "m")[1]["fills"]
    assert fills["market_info"].startswith("stored binance market info")
    assert (fills["fee"], fills["amount_step"], fills["min_notional"]) == (0.001, 1e-05, 5.0)
    CandleStore(data_dir).ingest(
        "binance", "BTC/USDT", "1h", candles, source="test"
    )  # 200 newer candles arrive
    until = f"{candles['timestamp'].iloc[450]:%Y-%m-%dT%H:%M}"
    code, _, err = _cli(tmp_path, capsys, "--resume", m, "--epochs", "2", "--until", until)
    assert code == 2 and "until" in err, err
    code, _, err = _cli(tmp_path, capsys, "--resume", m, "--epochs", "2")
    assert code == 0, err
    _, meta = load_model(tmp_path / "m")
    assert meta["data_range"]["candles"] == 500  # the same candles and split, not the grown store
