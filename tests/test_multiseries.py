"""Several series in one model (issue 14): training on two series, a mixed timeframe refused, the
transfer matrix of one model over several stored series."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chartrl.account.fills import MarketRules
from chartrl.backtest.skill import pooled_skill_test, skill_test
from chartrl.chart.tensor_render import TensorRenderer
from chartrl.cli import main
from chartrl.errors import UsageError
from chartrl.testing.synthetic import synthetic_candles
from chartrl.train.checkpoint import read_meta
from chartrl.train.dqn import train
from chartrl.train.env import ReplayEnv
from chartrl.train.history import read_history
from chartrl.train.imitation import series_windows
from chartrl.train.series import check_timeframes, lane_layout, prepare_series, series_of
from test_training import SPEC, tiny_cfg

A, B = "x:AAA/USDT:1h", "x:BBB/BTC:1h"
ETC_MARKET = {
    "symbol": "ETC/BTC",
    "base": "ETC",
    "quote": "BTC",
    "taker": 0.001,
    "maker": 0.001,
    "precision": {"amount": 0.01, "price": 1e-07},
    "limits": {"amount": {"min": 0.01, "max": 9e6}, "cost": {"min": 0.0001, "max": 9e6}},
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _two(weights=None, rules=None):
    # Prices five orders of magnitude apart, as BTC/USDT and ETC/BTC are.
    a = synthetic_candles(400, seed=5)
    b = synthetic_candles(300, seed=6, start="2020-03-01", price0=0.0005)
    return prepare_series([(A, a), (B, b)], SPEC, "1h", 0.2, rules=rules, weights=weights)


def test_charts_and_steps_never_mix_two_series() -> None:
    data = _two()
    a, b = data.series
    assert (a.start, a.stop, b.start, b.stop) == (0, 400, 400, 700)
    # Every chart of B is the chart B's own renderer draws from B's candles alone.
    alone = TensorRenderer(synthetic_candles(300, seed=6, start="2020-03-01", price0=0.0005), SPEC)
    local = alone.valid_indices[[0, 5, -1]]
    got = data.frames.get(local + b.start)
    assert torch.equal(got, torch.as_tensor(alone.render(local)))
    assert data.frames.valid[b.start : b.start + local[0]].sum() == 0  # B's first window: no chart
    # The last candle of A is a break: no transition runs from A into B.
    assert data.arrays.break_after[a.stop - 1]
    for p in data.series:
        assert ((p.train >= p.start) & (p.train + 1 < p.stop)).all()
        assert ((p.validation >= p.start) & (p.validation + 1 < p.stop)).all()


def test_lanes_cover_both_series_by_size_or_weight() -> None:
    rules = [MarketRules(fee=0.001), MarketRules(fee=0.002)]
    data = _two(rules=rules)
    owner = series_of(data.series, len(data.arrays))
    segments, rules_at = lane_layout(data, 10, MarketRules())
    env = ReplayEnv(data.arrays, data.train, 10, 1000.0, rules_at, segments=segments)
    sizes = np.array([len(p.train) for p in data.series])
    lane_series = owner[env.segments[:, 0]]
    assert (owner[env.segments] == lane_series[:, None]).all()  # each lane inside one series
    share = np.bincount(lane_series, minlength=2) / 10
    assert share == pytest.approx(sizes / sizes.sum(), abs=0.02)  # by size: 6 and 4 lanes
    # ... also in the first steps of an epoch (max_steps_per_epoch: a nightly fine-tune)
    first = np.bincount(owner[env.segments[:, :5]].ravel(), minlength=2) / env.segments[:, :5].size
    assert first == pytest.approx(share)
    # each lane's account fills under its own series' rules
    assert [a.rules.fee for a in env.accounts] == [0.001 if k == 0 else 0.002 for k in lane_series]
    weighted = _two(weights=[1.0, 3.0])
    segments, _ = lane_layout(weighted, 4, MarketRules())
    assert sorted(owner[segments[:, 0]].tolist()) == [0, 1, 1, 1]  # 1:3 of the lanes
    for row in segments:
        assert len(set(owner[row].tolist())) == 1
    with pytest.raises(UsageError, match="at least one lane each"):
        lane_layout(weighted, 1, MarketRules())


def test_imitation_windows_stay_inside_one_series() -> None:
    fees = [MarketRules(fee=0.001), MarketRules(fee=0.002)]
    data = _two(rules=fees)
    owner = series_of(data.series, len(data.arrays))
    idx, fee, _slip, floor = series_windows(data.series, 200, 5, np.random.default_rng(0), 0.0, 0.0)
    k = owner[idx[:, 0]]
    assert (owner[idx] == k[:, None]).all()
    assert set(k.tolist()) == {0, 1}
    assert (fee == np.where(k == 0, 0.001, 0.002)).all()
    assert (floor == np.array([p.start for p in data.series])[k]).all()


def test_training_on_two_series_records_and_visits_both(tmp_path: Path, monkeypatch) -> None:
    from chartrl.train import imitation

    drawn: list[np.ndarray] = []

    def spy(*args, **kwargs):
        out = series_windows(*args, **kwargs)
        drawn.append(out[0])
        return out

    monkeypatch.setattr(imitation, "series_windows", spy)
    data = _two(weights=[1.0, 1.0])
    meta = {
        "chart_spec": SPEC,
        "series": {"exchange": "x", "symbol": "AAA/USDT", "timeframe": "1h"},
        "training_series": [{"name": p.name, **p.info} for p in data.series],
    }
    out = tmp_path / "m"
    train("cnnrnn", data, tiny_cfg(epochs=1, max_steps_per_epoch=8), out, meta, progress=False)
    saved = read_meta(out)
    assert [t["name"] for t in saved["training_series"]] == [A, B]
    assert all(t["candles"] and t["from"] and t["until"] for t in saved["training_series"])
    rows = read_history(out)
    dqn = [r for r in rows if r["stage"] == "dqn" and r["kind"] == "epoch"][-1]
    assert int(dqn["transitions@x_AAA-USDT_1h"]) > 0 and int(dqn["transitions@x_BBB-BTC_1h"]) > 0
    owner = series_of(data.series, len(data.arrays))
    assert set(owner[np.concatenate(drawn)[:, 0]].tolist()) == {0, 1}  # imitation saw both
    # validation per series and pooled
    for col in ("val_sharpe", "val_skill_p_value", "val_total_return@x_BBB-BTC_1h"):
        assert col in dqn


def test_mixed_timeframes_are_refused_naming_the_series(tmp_path: Path, capsys) -> None:
    with pytest.raises(UsageError, match=r"x:B/BTC:4h \(4h\)"):
        check_timeframes(["x:A/USDT:1h", "x:B/BTC:4h"], ["1h", "4h"], "1h")
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "--log-level",
                "warning",
                "train",
                "--series",
                "binance:BTC/USDT:1h,binance:ETC/BTC:4h",
                "--data-dir",
                str(tmp_path),
                "--out",
                str(tmp_path / "m"),
            ]
        )
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "binance:ETC/BTC:4h (4h)" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_pooled_skill_of_one_series_is_its_skill_test() -> None:
    rng = np.random.default_rng(3)
    opens = np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    blocks = np.array([[5, 20], [40, 44], [100, 180]])
    one = skill_test(opens, float(opens[-1]), blocks, 0.001, 5.0)
    assert pooled_skill_test([(opens, float(opens[-1]), blocks, 0.001, 5.0)]) == one
    # Two series: the statistic is the sum of the model's log returns.
    two = pooled_skill_test([(opens, float(opens[-1]), blocks, 0.001, 5.0)] * 2)
    assert two["skill_log_return"] == pytest.approx(2 * one["skill_log_return"])
    # ... against the sum of the two series' random placements (series k seeded seed + k).
    other = skill_test(opens, float(opens[-1]), blocks, 0.001, 5.0, seed=1)
    assert two["skill_null_mean"] == pytest.approx(
        one["skill_null_mean"] + other["skill_null_mean"]
    )


# ---- CLI on a store of two series -------------------------------------------------------------


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """binance BTC/USDT and ETC/BTC 1h (synthetic), with their market info; a small chart."""
    from chartrl.market.markets import save_market
    from chartrl.market.store import CandleStore
    from test_backtest import BINANCE_MARKET

    for key, value in (("WINDOW", "30"), ("HEIGHT", "32"), ("WIDTH", "32")):
        monkeypatch.setenv(f"CHARTRL__CHART__{key}", value)
    data = tmp_path / "data"
    monkeypatch.setenv("CHARTRL_DATA_DIR", str(data))
    btc = synthetic_candles(500, seed=3, start="2021-01-01")
    etc = synthetic_candles(450, seed=4, start="2021-01-03", price0=0.0005)
    CandleStore(data).ingest("binance", "BTC/USDT", "1h", btc, "test")
    CandleStore(data).ingest("binance", "ETC/BTC", "1h", etc, "test")
    save_market(data, "binance", "BTC/USDT", BINANCE_MARKET, 4)
    save_market(data, "binance", "ETC/BTC", ETC_MARKET, 4)
    return data


TINY_DQN = ("--stages", "dqn", "--epochs", "1", "--num-envs", "2", "--learning-starts", "4")
TINY_DQN += ("--max-steps-per-epoch", "6")
"""A DQN stage of a few steps on the store's two series (CLI options)."""


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["--log-level", "warning", *argv])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.mark.parametrize("source", ["options", "config"])
def test_cli_trains_on_two_series(store: Path, tmp_path: Path, capsys, source) -> None:
    out = tmp_path / "m"
    if source == "options":
        given = [
            "train",
            "--series",
            "binance:BTC/USDT:1h,binance:ETC/BTC:1h",
            "--series-weights",
            "1,1",
        ]
    else:
        config = tmp_path / "c.toml"
        config.write_text(
            '[model]\ntrain_series = ["binance:BTC/USDT:1h", "binance:ETC/BTC:1h"]\n'
            "train_series_weights = [1, 1]\n"
        )
        given = ["-c", str(config), "train"]
    code, _, err = _run(
        capsys,
        *given,
        "--strategy",
        "cnn",
        *TINY_DQN,
        "--no-progress",
        "--out",
        str(out),
    )
    assert code == 0, err
    meta = read_meta(out)
    ts = meta["training_series"]
    assert [t["name"] for t in ts] == ["binance:BTC/USDT:1h", "binance:ETC/BTC:1h"]
    assert [t["candles"] for t in ts] == [500, 450] and [t["weight"] for t in ts] == [1.0, 1.0]
    assert ts[1]["from"].startswith("2021-01-03") and ts[1]["validation_from"]
    # each under its own market's rules, in its own quote (minimum notional 5 USDT, 0.0001 BTC)
    assert [t["fills"]["min_notional"] for t in ts] == [5.0, 0.0001]
    assert meta["series"]["symbol"] == "BTC/USDT"


def test_transfer_matrix_writes_table_and_figure(store: Path, tmp_path: Path, capsys) -> None:
    from chartrl.chart.spec import ChartSpec
    from chartrl.strategies.registry import build_policy
    from chartrl.train.checkpoint import save_model

    spec = ChartSpec(window=30, height=32, width=32)
    policy = build_policy("cnnrnn", spec, widths=(4, 4, 4), feat_dim=8, hidden_size=8)
    meta = {
        "chart_spec": spec,
        "series": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"},
        "data_range": {"from": "2021-01-01T00:00:00+00:00", "until": "2021-01-10T00:00:00+00:00"},
    }
    model = save_model(tmp_path / "model", policy, meta)
    out = tmp_path / "matrix"
    code, stdout, err = _run(
        capsys,
        "backtest",
        "--model",
        str(model),
        "--series",
        "binance:BTC/USDT:1h,binance:ETC/BTC:1h",
        "--from",
        "2021-01-17",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    assert code == 0, err
    table = pd.read_csv(out / "matrix.csv")
    assert table["series"].tolist() == ["binance:BTC/USDT:1h", "binance:ETC/BTC:1h"]
    assert table["series_in_training"].tolist() == [True, False]
    assert table["quote_currency"].tolist() == ["USDT", "BTC"]
    for col in ("total_return", "buyhold_total_return", "buyhold_sharpe", "skill_p_value"):
        assert table[col].notna().all(), col
    md = (out / "matrix.md").read_text()
    assert "| binance:ETC/BTC:1h |" in md and "**no: transfer**" in md
    assert (out / "matrix.png").read_bytes()[:4] == b"\x89PNG"
    etc = json.loads((out / "binance_ETC-BTC_1h" / "metrics.json").read_text())
    assert etc["series_in_training"] is False and etc["quote_currency"] == "BTC"
    assert "Final equity (BTC)" in (out / "binance_ETC-BTC_1h" / "report.md").read_text()
    assert "binance:ETC/BTC:1h" in stdout


def test_load_model_accepts_a_transfer_of_its_timeframe_only(tmp_path: Path) -> None:
    """What backtest and the daemon (`run`) load: another series of the model's timeframe, logged
    as a transfer; another timeframe refused. Without allow_transfer (resume, retrain) the series
    must be the model's."""
    from structlog.testing import capture_logs

    from chartrl.errors import CheckpointError
    from chartrl.strategies.registry import build_policy
    from chartrl.train.checkpoint import load_model, save_model, series_in_training

    policy = build_policy("cnn", SPEC, feat_dim=8)
    meta = {"chart_spec": SPEC, "series": {"exchange": "x", "symbol": "A/USDT", "timeframe": "1h"}}
    model = save_model(tmp_path / "m", policy, meta)
    with capture_logs() as logs:
        _, got = load_model(model, expect_series=("x", "B/BTC", "1h"), allow_transfer=True)
    assert not series_in_training(got, "x", "B/BTC", "1h")
    assert series_in_training(got, "x", "A/USDT", "1h")
    events = [e for e in logs if e["event"] == "model_transfer"]
    assert events and events[0]["training_series"] == "x:A/USDT:1h"
    with pytest.raises(CheckpointError, match="trained on 1h candles, not 4h"):
        load_model(model, expect_series=("x", "B/BTC", "4h"), allow_transfer=True)
    with pytest.raises(CheckpointError, match="another series"):
        load_model(model, expect_series=("x", "B/BTC", "1h"))
    # A model of two series is its own on either (resume, nightly retrain).
    both = {
        **meta,
        "training_series": [
            {"name": n, "exchange": "x", "symbol": y, "timeframe": "1h"}
            for n, y in (("x:A/USDT:1h", "A/USDT"), ("x:B/BTC:1h", "B/BTC"))
        ],
    }
    two = save_model(tmp_path / "two", policy, both)
    assert series_in_training(
        load_model(two, expect_series=("x", "B/BTC", "1h"))[1], "x", "B/BTC", "1h"
    )
