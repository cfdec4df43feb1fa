"""The backtest runner end to end: no lookahead (black box), engine sanity against the oracle and
random baselines, and the CLI's outputs and one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chartrl.account.fills import MarketRules
from chartrl.backtest.runner import run_backtest
from chartrl.chart.spec import ChartSpec
from chartrl.cli import main
from chartrl.strategies.base import greedy
from chartrl.strategies.rules import OracleStrategy, RandomStrategy, SMACrossover, make_rule
from chartrl.testing.synthetic import synthetic_candles

SPEC = ChartSpec(window=30, height=32, width=32, ma_periods=(5, 20), bollinger_period=20)
COSTS = MarketRules(fee=0.001, slippage_bps=5)
FREE = MarketRules(fee=0.0, slippage_bps=0)
# ccxt's binance BTC/USDT market info, as `chartrl fetch` stores it (precisionMode TICK_SIZE).
BINANCE_MARKET = {
    "symbol": "BTC/USDT",
    "base": "BTC",
    "quote": "USDT",
    "taker": 0.00075,
    "maker": 0.00075,
    "precision": {"amount": 1e-05, "price": 0.01},
    "limits": {"amount": {"min": 1e-05, "max": 9000.0}, "cost": {"min": 5.0, "max": 9000000.0}},
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks: one thread is faster, and on a busy 2-core machine much faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_policy(seed: int = 4):
    """A tiny untrained cnnrnn made decisive: BatchNorm statistics taken from real charts (as
    training would) and larger output weights, so its actions follow the charts and it trades."""
    from chartrl.chart.tensor_render import TensorRenderer
    from chartrl.strategies.registry import build_policy

    torch.manual_seed(seed)
    policy = build_policy("cnnrnn", SPEC, widths=(4, 4, 4), feat_dim=8, hidden_size=8)
    renderer = TensorRenderer(synthetic_candles(200, seed=99), SPEC)
    for m in policy.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration pass
    with torch.no_grad():
        policy.train().features(renderer.render(renderer.valid_indices[:100]))
        policy.cell.weight_ih_l0.mul_(4)
        policy.out.weight.mul_(4)
        policy.out.bias.zero_()
    return policy.eval()


def _perturb_after(candles: pd.DataFrame, t: int, seed: int = 5) -> pd.DataFrame:
    """Same candles up to t; every later candle scaled by a random factor (still a valid candle)."""
    out = candles.copy()
    rng = np.random.default_rng(seed)
    k = len(out) - t - 1
    factor = np.exp(rng.normal(0, 0.05, k))
    for c in ("open", "high", "low", "close"):
        out.loc[t + 1 :, c] = out.loc[t + 1 :, c].to_numpy() * factor
    out.loc[t + 1 :, "volume"] = out.loc[t + 1 :, "volume"].to_numpy() * rng.uniform(0.2, 3.0, k)
    return out


def _prefix_identical(make, candles: pd.DataFrame, t: int) -> bool:
    a = run_backtest(make(), candles, SPEC, COSTS)
    b = run_backtest(make(), _perturb_after(candles, t), SPEC, COSTS)
    first = int(candles["timestamp"].searchsorted(a.start))
    k = t - first  # decisions at candles first..t, equity marked at the closes of first..t
    assert k > 50 and a.start == b.start
    return bool(
        np.array_equal(a.actions[: k + 1], b.actions[: k + 1])
        and np.array_equal(a.equity[: k + 1], b.equity[: k + 1])
    )


@pytest.mark.parametrize(
    "make",
    [lambda: SMACrossover(5, 20), lambda: RandomStrategy(seed=3, trade_prob=0.3)],
    ids=["sma", "random"],
)
def test_no_lookahead_rules(make) -> None:
    candles = synthetic_candles(500, seed=2)
    for t in (150, 333):
        assert _prefix_identical(make, candles, t)


def test_no_lookahead_neural_policy() -> None:
    candles = synthetic_candles(400, seed=4)
    policy = tiny_policy()
    assert (
        len(run_backtest(policy, candles, SPEC, COSTS).fills) >= 20
    )  # it trades, so positions matter
    for t in (200, 311):
        assert _prefix_identical(lambda: policy, candles, t)


def test_the_lookahead_check_catches_the_oracle() -> None:
    # The oracle reads the future; the same black-box check must see it (so the check can fail).
    candles = synthetic_candles(500, seed=2)
    assert not all(
        _prefix_identical(lambda: OracleStrategy(24), candles, t) for t in (150, 250, 333, 420)
    )


def test_neural_batched_features_equal_one_chart_per_step() -> None:
    from chartrl.chart.tensor_render import TensorRenderer

    candles = synthetic_candles(200, seed=6)
    policy = tiny_policy()
    res = run_backtest(
        policy, candles, SPEC, COSTS, chunk=7
    )  # odd chunk: chunk borders must not matter
    assert len(res.fills) >= 10
    renderer = TensorRenderer(candles, SPEC)
    first = int(candles["timestamp"].searchsorted(res.start))
    # The seed-style loop: render one chart, one forward pass per step, with the account's position
    # (long flag, log return against the last buy's cost per unit including the fee).
    hidden, actions = policy.initial_hidden(1), []
    with torch.no_grad():
        for k, t in enumerate(range(first, first + len(res.actions))):
            pos = (0.0, 0.0)
            if res.position[k] > 0:
                buy = [
                    f
                    for f, i in zip(res.fills, res.fill_index, strict=True)
                    if f.side == "buy" and i <= k
                ][-1]
                pos = (1.0, math.log(candles["close"][t] / ((buy.notional + buy.fee) / buy.amount)))
            q, hidden = policy(renderer.render([t]), torch.tensor([pos]), hidden)
            actions.append(
                int(greedy(q, torch.tensor([pos])))
            )  # the best order that does something
    assert actions == res.actions.tolist()


def test_oracle_beats_buy_and_hold_by_a_wide_margin(candles: pd.DataFrame) -> None:
    oracle = run_backtest(OracleStrategy(24), candles, SPEC, COSTS)
    hold = run_backtest(make_rule("buyhold"), candles, SPEC, COSTS)
    assert oracle.start == hold.start and len(oracle.equity) == len(hold.equity)
    assert oracle.equity[-1] / oracle.equity[0] > 3 * hold.equity[-1] / hold.equity[0]


def test_random_loses_exactly_its_costs(candles: pd.DataFrame) -> None:
    # Same seeded decisions with and without costs: all-in, every buy costs a factor
    # 1 / ((1 + slip)(1 + fee)) of equity and every sell (1 - slip)(1 - fee); nothing else differs.
    free = run_backtest(RandomStrategy(seed=9), candles, SPEC, FREE)
    paid = run_backtest(RandomStrategy(seed=9), candles, SPEC, COSTS)
    assert np.array_equal(free.actions, paid.actions)
    s, f = 5e-4, 1e-3
    buys = sum(1 for x in paid.fills if x.side == "buy")
    sells = len(paid.fills) - buys
    assert buys > 20
    expected = -buys * math.log((1 + s) * (1 + f)) + sells * math.log((1 - s) * (1 - f))
    assert math.log(paid.equity[-1] / free.equity[-1]) == pytest.approx(expected, rel=1e-9)


def test_flat_market_random_only_pays_fees() -> None:
    candles = synthetic_candles(400, seed=1)
    for c in ("open", "high", "low", "close"):
        candles[c] = 100.0
    res = run_backtest(RandomStrategy(seed=4, trade_prob=0.3), candles, SPEC, COSTS)
    buys = sum(1 for x in res.fills if x.side == "buy")
    sells = len(res.fills) - buys
    trip = (1 - 5e-4) * (1 - 1e-3) / ((1 + 5e-4) * (1 + 1e-3))
    still_long = 1 / ((1 + 5e-4) * (1 + 1e-3)) if buys > sells else 1.0
    assert sells > 10
    assert res.equity[-1] == pytest.approx(10_000 * trip**sells * still_long, rel=1e-9)
    assert res.equity.max() <= 10_000 + 1e-9  # the engine never makes money out of nothing


# ---- CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pd.DataFrame:
    """600 synthetic hourly candles stored as binance BTC/USDT 1h; a small chart via the environment."""
    from chartrl.market.store import CandleStore

    for key, value in (("WINDOW", "30"), ("HEIGHT", "32"), ("WIDTH", "32")):
        monkeypatch.setenv(f"CHARTRL__CHART__{key}", value)
    from chartrl.market.markets import save_market

    candles = synthetic_candles(600, seed=3, start="2021-01-01")
    CandleStore(tmp_path / "data").ingest("binance", "BTC/USDT", "1h", candles, "test")
    save_market(tmp_path / "data", "binance", "BTC/USDT", BINANCE_MARKET, 4)
    return candles


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["--log-level", "warning", "backtest", *argv])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_cli_writes_the_report(
    store: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "sma"
    code, stdout, err = _cli(
        capsys, "--strategy", "sma", "--from", "2021-01-03", "--trials", "5", "--out", str(out)
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "decisions.csv",
        "equity.png",
        "metrics.json",
        "report.html",
        "report.md",
        "trades.png",
    ]
    page = (out / "report.html").read_text()
    # Self-contained (plotly.js inside, nothing fetched), with the trades and the metrics table.
    assert (
        "<script src=" not in page
        and "Plotly.newPlot" in page
        and page.count('"type":"candlestick"') == 1
    )
    assert "Sharpe (annualised)" in page and "buy and hold" in page
    m = json.loads((out / "metrics.json").read_text())
    for key in (
        "total_return",
        "cagr",
        "sharpe",
        "sortino",
        "calmar",
        "max_drawdown",
        "profit_factor",
        "expectancy",
        "win_rate",
        "trades",
        "exposure",
        "fees_paid",
        "turnover",
        "start",
        "end",
        "candles",
    ):
        assert key in m and key in m["baselines"]["buyhold"]
    assert m["start"].startswith("2021-01-03T00:00") and m["deflated_sharpe"]["trials"] == 5
    decisions = pd.read_csv(out / "decisions.csv")
    assert list(decisions.columns[:4]) == ["timestamp", "action", "side", "fill_price"]
    assert len(decisions) == m["candles"] - 1
    assert decisions["equity"].iloc[-1] == pytest.approx(m["final_equity"])
    assert (out / "equity.png").read_bytes()[:4] == b"\x89PNG"
    assert "sma" in stdout and "report.md" in stdout


def test_cli_oracle_is_flagged_as_cheating(
    store: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "oracle"
    code, stdout, _ = _cli(capsys, "--strategy", "oracle", "--out", str(out))
    assert code == 0 and "CHEATING" in stdout
    assert "CHEATING" in (out / "report.md").read_text()
    m = json.loads((out / "metrics.json").read_text())
    assert m["cheating"] is True and "CHEATING" in m["note"]


def test_cli_fills_under_the_stored_market_rules(
    store, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The paper account's precision and minimums, whatever the fee: --fee overrides the fee only."""
    out = tmp_path / "bh"
    code, _, err = _cli(capsys, "--strategy", "buyhold", "--fee", "0.002", "--out", str(out))
    assert code == 0, err
    p = json.loads((out / "metrics.json").read_text())["parameters"]
    assert (p["fee"], p["amount_step"], p["min_amount"], p["min_notional"]) == (
        0.002,
        1e-05,
        1e-05,
        5.0,
    )
    assert p["market_info"].startswith("stored binance market info")
    amount = pd.read_csv(out / "decisions.csv")["fill_amount"].dropna().iloc[0]
    assert amount == pytest.approx(round(amount, 5), abs=1e-12)  # rounded to the 0.00001 BTC step
    assert "market_info" in (out / "report.md").read_text()


def test_cli_without_market_info_warns_and_says_so(
    store, tmp_path: Path, capsys, monkeypatch
) -> None:
    from chartrl.market import exchange
    from chartrl.market.markets import market_path

    market_path(tmp_path / "data", "binance", "BTC/USDT").unlink()

    def unreachable(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(exchange, "make_exchange", unreachable)
    out = tmp_path / "bh"
    code, stdout, err = _cli(capsys, "--strategy", "buyhold", "--out", str(out))
    assert code == 0 and "market_info_unavailable" in stdout, err  # the log goes to stdout
    p = json.loads((out / "metrics.json").read_text())["parameters"]
    assert p["market_info"].startswith("none") and p["amount_step"] is None and p["fee"] == 0.001


def test_market_rules_empty_fee_takes_the_exchange_fee(store, tmp_path: Path) -> None:
    from chartrl.config.settings import Settings
    from chartrl.errors import ConfigError
    from chartrl.market.markets import market_path, market_rules

    s = Settings.model_validate({"data": {"dir": str(tmp_path / "data")}, "trading": {"fee": None}})
    rules, _ = market_rules(s)
    assert rules == MarketRules(
        fee=0.00075,
        slippage_bps=s.trading.slippage_bps,
        amount_step=1e-05,
        min_amount=1e-05,
        min_notional=5.0,
        position_fraction=s.trading.position_fraction,
    )
    market_path(tmp_path / "data", "binance", "BTC/USDT").write_text(
        "{not json"
    )  # an unreadable cache is no cache
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            "chartrl.market.exchange.make_exchange",
            lambda *a, **k: (_ for _ in ()).throw(OSError("offline")),
        )
        with pytest.raises(ConfigError, match="pass --fee"):
            market_rules(s)


def _model(
    tmp_path: Path, spec: ChartSpec, symbol: str = "BTC/USDT", timeframe: str = "1h"
) -> Path:
    from chartrl.strategies.registry import build_policy
    from chartrl.train.checkpoint import save_model

    policy = build_policy("cnnrnn", spec, widths=(4, 4, 4), feat_dim=8, hidden_size=8)
    meta = {
        "chart_spec": spec,
        "series": {"exchange": "binance", "symbol": symbol, "timeframe": timeframe},
        "data_range": {"from": "2021-01-01T00:00:00+00:00", "until": "2021-01-10T00:00:00+00:00"},
    }
    name = f"model-{symbol.replace('/', '')}-{timeframe}-{spec.window}"
    return save_model(tmp_path / name, policy, meta)


def test_cli_replays_a_model(
    store: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "model-run"
    code, stdout, err = _cli(
        capsys, "--model", str(_model(tmp_path, SPEC)), "--out", str(out), "--device", "cpu"
    )
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["strategy"] == "cnnrnn" and m["model_trained_on_period"] is True
    assert "In-sample" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["--strategy", "sma", "--from", "2030-01-01"],
            1,
            "no binance BTC/USDT 1h candles between",
        ),
        (
            ["--strategy", "sma", "--from", "2021-01-05", "--until", "2021-01-02"],
            2,
            "is before --from",
        ),
        (["--strategy", "sma", "--until", "2021-01-02T06:00"], 1, "a chart needs 30 candles"),
        (["--strategy", "cnnrnn"], 2, "has no weights to replay"),
        (["--strategy", "sma", "--fee", "0.5"], 2, "--fee 0.5"),
        (["--model", "/nonexistent/model"], 1, "not a chartrl model dir"),
    ],
    ids=[
        "empty-range",
        "reversed-range",
        "shorter-than-window",
        "neural-without-model",
        "bad-fee",
        "missing-model",
    ],
)
def test_cli_bad_input_is_one_line(
    store, tmp_path: Path, capsys: pytest.CaptureFixture, argv, code, message
) -> None:
    got, _, err = _cli(capsys, *argv, "--out", str(tmp_path / "x"))
    assert got == code
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("other", ["spec", "timeframe"])
def test_cli_refuses_a_model_of_another_spec_or_timeframe(
    store, tmp_path: Path, capsys: pytest.CaptureFixture, other
) -> None:
    model = (
        _model(tmp_path, SPEC.model_copy(update={"window": 40}))
        if other == "spec"
        else _model(tmp_path, SPEC, timeframe="4h")
    )
    code, _, err = _cli(capsys, "--model", str(model), "--out", str(tmp_path / "x"))
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (
        ("another chart spec" in err and "window" in err)
        if other == "spec"
        else ("trained on 4h candles, not 1h" in err)
    )
    assert not (tmp_path / "x").exists()


def test_cli_transfer_backtest_is_labelled(
    store, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A model of another symbol (same spec and timeframe) replays, and every output says it is a
    transfer and which series the model learnt from; money is labelled in the series' quote."""
    out = tmp_path / "transfer"
    model = _model(tmp_path, SPEC, "ETC/BTC")
    code, stdout, err = _cli(capsys, "--model", str(model), "--out", str(out), "--device", "cpu")
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["series_in_training"] is False and m["model_trained_on_period"] is False
    assert [t["name"] for t in m["training_series"]] == ["binance:ETC/BTC:1h"]
    assert m["quote_currency"] == "USDT" and m["series_name"] == "binance:BTC/USDT:1h"
    report = (out / "report.md").read_text()
    assert "**Transfer:**" in report and "binance:ETC/BTC:1h" in report
    assert "In-sample" not in report
    assert "| Fees paid (USDT) |" in report and "Final equity (USDT)" in report
    assert "TRANSFER: trained on binance:ETC/BTC:1h" in stdout
    assert "Transfer:" in (out / "report.html").read_text()
    # The same model on its own series is no transfer.
    own = _model(tmp_path, SPEC)
    code, _, err = _cli(capsys, "--model", str(own), "--out", str(tmp_path / "own"))
    m = json.loads((tmp_path / "own" / "metrics.json").read_text())
    assert code == 0 and m["series_in_training"] is True
    assert "**Transfer:**" not in (tmp_path / "own" / "report.md").read_text()


def test_rule_signals_by_hand() -> None:
    closes = [10, 10, 10, 13, 16, 10, 4, 4]
    frame = pd.DataFrame({"close": np.array(closes, dtype=float)})
    sma = SMACrossover(2, 4)
    sma.prepare(frame)
    # MA2 vs MA4 at t=3: 11.5 > 10.75 buy; t=4: 14.5 > 12.25 buy; t=5: 13 > 12.25 buy;
    # t=6: 7 < 10.75 sell; t=7: 4 < 8.5 sell. Before t=3 the slow average does not exist: hold.
    assert [sma.decide(t, (0.0, 0.0)) for t in range(8)] == [0, 0, 0, 1, 1, 1, 2, 2]
    hold = make_rule("buyhold")
    assert hold.decide(0, (0.0, 0.0)) == 1 and hold.decide(1, (1.0, 0.3)) == 0
    a, b = RandomStrategy(seed=5), RandomStrategy(seed=5)
    a.prepare(pd.DataFrame({"close": np.ones(50)}))
    b.prepare(pd.DataFrame({"close": np.ones(80)}))  # a longer series: the same first draws
    assert [a.decide(t, (0.0, 0.0)) for t in range(50)] == [
        b.decide(t, (0.0, 0.0)) for t in range(50)
    ]
    with pytest.raises(ValueError, match="fast < slow"):
        SMACrossover(20, 5)
