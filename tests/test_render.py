"""The chart tensor: layout, validity, determinism, no lookahead, agreement with mplfinance, the CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chartrl.chart import layout
from chartrl.chart.indicators import warmup
from chartrl.chart.spec import ChartSpec
from chartrl.chart.tensor_render import TensorRenderer, spec_channels
from chartrl.errors import ConfigError, DataError

SMALL = ChartSpec(window=60, height=48, width=40)  # 1.5 candles a column, quick
SPECS = {
    "default": ChartSpec(),
    "grey-macd": ChartSpec(channels=1, oscillator="macd"),
    "diff": ChartSpec(diff_frame=True, window=80, height=40, width=50),
    "bare": ChartSpec(
        ma_periods=(),
        bollinger_period=None,
        volume=False,
        oscillator="none",
        height=40,
        width=64,
        window=64,
    ),
    "wide": ChartSpec(window=40, width=100, height=50),  # fewer candles than columns
}


def _extent(img: np.ndarray, rows: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of one channel in a panel: top row, bottom row (panel-relative), drawn?"""
    on = img[rows[0] : rows[1]] > 0
    drawn = on.any(axis=0)
    top = np.where(drawn, on.argmax(axis=0), -1)
    bottom = np.where(drawn, (rows[1] - rows[0] - 1) - on[::-1].argmax(axis=0), -1)
    return top, bottom, drawn


def _mask(frame: np.ndarray, spec: ChartSpec, names: set[str], panel: str) -> np.ndarray:
    """(rows, W) pixels of a panel where any of the elements ``names`` is drawn: each element owns a bit."""
    p0, p1 = spec.panels()[panel]
    out = np.zeros((p1 - p0, spec.width), dtype=bool)
    for e in layout.elements(spec):
        if e.name in names:
            out |= (frame[e.channel, p0:p1] & e.weight) > 0
    return out


def _mask_extent(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of a mask: top row, bottom row, drawn?"""
    drawn = mask.any(axis=0)
    return (
        np.where(drawn, mask.argmax(axis=0), -1),
        np.where(drawn, len(mask) - 1 - mask[::-1].argmax(axis=0), -1),
        drawn,
    )


@pytest.mark.parametrize("name", list(SPECS))
def test_shape_dtype_and_allowed_values(candles: pd.DataFrame, name: str) -> None:
    spec = SPECS[name]
    r = TensorRenderer(candles, spec)
    ends = r.valid_indices[[0, len(r.valid_indices) // 2, -1]]
    x = r.render(ends)
    assert x.dtype == torch.uint8 and x.device.type == "cpu"
    assert tuple(x.shape) == (
        3,
        spec_channels(spec),
        spec.height,
        spec.width,
    ) and r.channels == spec_channels(spec)
    assert spec_channels(spec) == spec.channels * (2 if spec.diff_frame else 1)
    # Every pixel of the frame is a sum of element weights of its panel and channel.
    for panel, (p0, p1) in spec.panels().items():
        for ch in range(spec.channels):
            weights = [
                e.weight for e in layout.elements(spec) if e.panel == panel and e.channel == ch
            ]
            sums = {0}
            for w in weights:
                sums |= {s + w for s in sums}
            got = set(np.unique(x[:, ch, p0:p1].numpy()).tolist())
            assert got <= sums, (panel, ch, got - sums)
    assert x[:, : spec.channels].sum() > 0


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"oscillator": "macd"},
        {"ma_periods": (5, 10, 20)},
        {"ma_periods": (3, 5, 8, 13, 21), "bollinger_period": None},
    ],
)
def test_every_subset_of_elements_has_its_own_pixel_value(channels: int, extra: dict) -> None:
    """Pixels are sums of weights: no two sets of elements sharing a channel may give one value."""
    spec = ChartSpec(channels=channels, **extra)
    groups: dict[tuple[str, int], list[layout.Element]] = {}
    for e in layout.elements(spec):
        groups.setdefault((e.panel, e.channel), []).append(e)
    for key, els in groups.items():
        sums: dict[int, tuple[str, ...]] = {}
        for r in range(len(els) + 1):
            for subset in itertools.combinations(els, r):
                value = sum(e.weight for e in subset)
                names = tuple(e.name for e in subset)
                assert value <= 255, (key, names)
                assert value not in sums, f"{key}: {names} and {sums.get(value)} both give {value}"
                sums[value] = names


def test_more_elements_than_bits_refused() -> None:
    with pytest.raises(ConfigError, match="more than 8 elements"):
        layout.elements(
            ChartSpec(channels=1, ma_periods=(3, 5, 10, 20))
        )  # candles 3 + 4 MAs + 2 bands
    assert (
        len(layout.elements(ChartSpec(channels=3, ma_periods=(3, 5, 10, 20)))) > 8
    )  # colour: MAs have their own channel


def test_valid_indices_exclude_warmup_and_bad_candles(candles: pd.DataFrame) -> None:
    spec = SMALL
    r = TensorRenderer(candles, spec)
    first = warmup(spec) + spec.window - 1
    assert r.valid_indices[0] == first and r.valid_indices.dtype == np.int64
    assert np.array_equal(r.valid_indices, np.arange(first, len(candles)))
    bad = candles.copy()
    bad.loc[1000, "close"] = np.nan
    bad.loc[2000, "high"] = bad.loc[2000, "low"] * 0.5  # high < low
    rb = TensorRenderer(bad, spec)
    expect = [
        t
        for t in range(first, len(candles))
        if not (t - spec.window < 1000 <= t or t - spec.window < 2000 <= t)
    ]
    # A NaN close also leaves the indicators that read it undefined for their period.
    assert set(rb.valid_indices) <= set(expect) and 1000 + 20 + spec.window in set(rb.valid_indices)
    assert not set(range(1000, 1000 + spec.window)) & set(rb.valid_indices)
    assert not set(range(2000, 2000 + spec.window)) & set(rb.valid_indices)
    with pytest.raises(DataError, match="first valid index"):
        rb.render([1010])
    rd = TensorRenderer(candles, spec.model_copy(update={"diff_frame": True}))
    assert rd.valid_indices[0] == first + 1


def test_deterministic_and_independent_of_batching(candles: pd.DataFrame) -> None:
    spec = ChartSpec(window=120, height=64, width=70)
    r = TensorRenderer(candles, spec)
    ends = r.valid_indices[::7][:300]  # more than one internal chunk
    a = r.render(ends)
    b = TensorRenderer(candles, spec).render(torch.as_tensor(ends))
    single = torch.cat([r.render([e]) for e in ends[:20]])
    assert torch.equal(a, b) and torch.equal(a[:20], single)
    out = torch.empty_like(a[:5])
    assert r.render(ends[:5], out=out) is out and torch.equal(out, a[:5])
    got = list(r.render_all(batch_size=128, indices=ends))
    assert np.array_equal(np.concatenate([i for i, _ in got]), ends)
    assert torch.equal(torch.cat([f for _, f in got]), a)


@pytest.mark.parametrize("name", ["default", "grey-macd", "diff"])
def test_no_lookahead(candles: pd.DataFrame, name: str) -> None:
    spec = SPECS[name]
    t = 2000
    changed = candles.copy()
    rng = np.random.default_rng(3)
    k = len(candles) - t - 1
    for col in ("open", "high", "low", "close"):
        changed.loc[t + 1 :, col] = changed.loc[t + 1 :, col] * rng.uniform(0.5, 1.5, k)
    changed.loc[t + 1 :, "high"] = changed.loc[t + 1 :, ["open", "high", "low", "close"]].max(
        axis=1
    )
    changed.loc[t + 1 :, "low"] = changed.loc[t + 1 :, ["open", "high", "low", "close"]].min(axis=1)
    changed.loc[t + 1 :, "volume"] = rng.lognormal(10, 1, k)
    a, b = TensorRenderer(candles, spec), TensorRenderer(changed, spec)
    ends = a.valid_indices[a.valid_indices <= t][-300:]
    assert torch.equal(a.render(ends), b.render(ends))
    later = a.valid_indices[a.valid_indices > t][:50]
    assert not torch.equal(a.render(later), b.render(later))  # the change is visible after t


def test_live_history_gives_the_backtest_frame(candles: pd.DataFrame) -> None:
    """A caller holding only history_needed(spec) candles draws the same bytes as the full series."""
    from chartrl.chart.indicators import history_needed

    for spec in (ChartSpec(), ChartSpec(oscillator="macd")):
        full, n = TensorRenderer(candles, spec), history_needed(spec)
        for t in (n + 5, 1777, len(candles) - 1):
            tail = TensorRenderer(candles.iloc[t - n + 1 : t + 1].reset_index(drop=True), spec)
            assert tail.valid_indices[-1] == n - 1
            assert torch.equal(full.render([t]), tail.render([n - 1]))


def _staircase(n: int = 300) -> pd.DataFrame:
    """Rising candles with a known spike: the price max, the volume max and one down candle."""
    close = 100 + np.arange(n, dtype=float)
    open_ = close - 0.5
    high, low, vol = close + 0.2, open_ - 0.2, np.full(n, 10.0)
    high[-30] += 40.0  # the window's high
    vol[-50] = 100.0  # the window's volume max
    open_[-10], close[-10] = close[-10], open_[-10]  # one down candle
    ts = pd.date_range("2022-01-01", periods=n, freq="h", tz="UTC")
    return pd.DataFrame(
        {"timestamp": ts, "open": open_, "high": high, "low": low, "close": close, "volume": vol}
    )


@pytest.mark.parametrize("channels", [3, 1])
def test_layout_places_extremes_and_colours(channels: int) -> None:
    spec = ChartSpec(
        window=100,
        width=100,
        height=60,
        ma_periods=(5,),
        bollinger_period=None,
        oscillator="none",
        channels=channels,
    )
    w = {e.name: e.weight for e in layout.elements(spec)}
    vol_ch = 0 if channels == 1 else 2
    c = _staircase()
    r = TensorRenderer(c, spec)
    x = r.render([len(c) - 1])[0].numpy()
    price, vol = spec.panels()["price"], spec.panels()["volume"]
    top, bottom, drawn = _mask_extent(_mask(x, spec, {"wick"}, "price"))
    assert drawn.all()
    assert top.argmin() == 100 - 30 and top.min() == 0  # the spike's column reaches the top row
    col_down = 100 - 10
    body = x[0, price[0] : price[1], col_down] & (
        w["wick"] | w["body_up"] | w["body_down"]
    )  # candle bits only
    assert (
        w["wick"] + w["body_down"] in body and w["wick"] + w["body_up"] not in body
    )  # a down body
    assert w["wick"] + w["body_up"] in x[0, price[0] : price[1], col_down - 1] & (
        w["wick"] | w["body_up"]
    )  # an up body
    vtop, _, vdrawn = _extent(x[vol_ch], vol)
    assert vdrawn.all() and vtop.argmin() == 100 - 50 and vtop.min() == 0
    # Lines are connected: each column's run meets the previous column's run.
    ltop, lbottom, ldrawn = _mask_extent(_mask(x, spec, {"sma_5"}, "price"))
    assert ldrawn.all()
    assert ((ltop[1:] <= lbottom[:-1] + 1) & (lbottom[1:] >= ltop[:-1] - 1)).all()
    # The SMA (below the lows of a rising series) is in the scaling: it, not a wick, takes the last row.
    assert lbottom[0] == price[1] - price[0] - 1 and bottom.max() < lbottom[0]


def test_wide_window_and_grey_levels(candles: pd.DataFrame) -> None:
    spec = SPECS["wide"]
    x = TensorRenderer(candles, spec).render([2500])[0].numpy()
    _, _, drawn = _extent(x[0], spec.panels()["price"])
    assert drawn.all()  # every column shows its candle when candles are wider than a pixel
    grey = ChartSpec(channels=1)
    w = {e.name: e.weight for e in layout.elements(grey)}
    g = TensorRenderer(candles, grey).render([2500])[0].numpy()
    up, down = _mask(g, grey, {"body_up"}, "price"), _mask(g, grey, {"body_down"}, "price")
    assert (
        up.any() and down.any() and not (up & down).any()
    )  # both kinds of body, never on one pixel
    assert not (
        (up | down) & ~_mask(g, grey, {"wick"}, "price")
    ).any()  # a body pixel is wick + body
    assert {e.channel for e in layout.elements(grey)} == {0} and w["wick"] == 128
    with pytest.raises(ConfigError, match="ma_periods"):
        layout.elements(ChartSpec(ma_periods=(2, 3, 4, 5, 6, 7)))


def test_diff_frame_encoding(candles: pd.DataFrame) -> None:
    spec = SPECS["diff"]
    base = spec.model_copy(update={"diff_frame": False})
    r, rb = TensorRenderer(candles, spec), TensorRenderer(candles, base)
    ends = np.array([900, 1500, 1501])
    x = r.render(ends).to(torch.int16)
    cur, prev = rb.render(ends).to(torch.int16), rb.render(ends - 1).to(torch.int16)
    assert torch.equal(x[:, :3], cur)
    assert torch.equal(x[:, 3:], torch.div(cur - prev, 2, rounding_mode="floor") + 128)
    assert (x[:, 3:] != 128).any()


AGREE_SPECS = {
    "default": ChartSpec(),  # 250 candles in 140 columns: several candles a column
    "window<width": ChartSpec(window=100, width=140),  # a candle spans one or two columns
    "grey": ChartSpec(channels=1),  # everything in one channel, told apart by the weights' bits
}


@pytest.fixture(params=["synthetic", "btc"])
def agreement_data(
    request: pytest.FixtureRequest, candles: pd.DataFrame
) -> tuple[pd.DataFrame, list[int]]:
    """Candles and positions (into valid_indices) of the windows to compare."""
    if request.param == "synthetic":
        return candles, [5, 1700]
    from chartrl.cli.sim_cmd import load_candles

    btc, _ = load_candles(request.getfixturevalue("shared_btc_csv"), "BTC/USDT", None)
    return btc, [3000, 20000, 32000]


@pytest.mark.parametrize("name", list(AGREE_SPECS))
def test_agrees_with_mplfinance(agreement_data: tuple[pd.DataFrame, list[int]], name: str) -> None:
    """Per column, the candles' top and bottom rows and the volume bar's top agree within 1 px.

    1 px: the tensor scales in float32 and rounds, matplotlib in float64 and snaps, so a value on
    a half-pixel boundary may land one row apart (measured: 0 px almost everywhere). One exception,
    by design: Agg draws nothing for a zero-length segment, so with one-pixel candles (n >= W) a
    candle (or volume) under one pixel tall can be missing in the mplfinance frame; the tensor
    draws it as one pixel, so a column mplfinance left empty must be one row tall in the tensor.
    Lines only agree within their neighbourhood (see chartrl.chart.mpl_render): a line's pixels in
    column c lie within 2 px of the rows the tensor draws for it in columns c-2..c+2.
    """
    pytest.importorskip("mplfinance")
    from chartrl.chart.mpl_render import render_tensor_mpl

    candles, where = agreement_data
    spec = AGREE_SPECS[name]
    r = TensorRenderer(candles, spec)
    ends = r.valid_indices[where]
    fast, slow = r.render(ends).numpy(), render_tensor_mpl(candles, spec, ends).numpy()
    assert fast.shape == slow.shape
    lines = [e.name for e in layout.elements(spec) if e.name.startswith(("sma", "bb", "rsi"))]
    for i in range(len(ends)):
        for panel, names in (
            ("price", {"wick", "body_up", "body_down"}),
            ("volume", {"volume_up", "volume_down"}),
        ):
            t1, b1, d1 = _mask_extent(_mask(fast[i], spec, names, panel))
            t2, b2, d2 = _mask_extent(_mask(slow[i], spec, names, panel))
            assert d1.all()
            assert (~d2).sum() <= spec.width // 10 and (t1[~d2] == b1[~d2]).all(), (
                panel,
                np.flatnonzero(~d2),
            )
            assert np.abs(t1 - t2)[d2].max() <= 1, (panel, np.abs(t1 - t2)[d2])
            assert np.abs(b1 - b2)[d2].max() <= 1, (panel, np.abs(b1 - b2)[d2])
        for line in lines:
            panel = "oscillator" if line == "rsi" else "price"
            f, s = _mask(fast[i], spec, {line}, panel), _mask(slow[i], spec, {line}, panel)
            ft, fb, _ = _mask_extent(f)
            ft = np.where(ft < 0, 10**6, ft)
            for c in np.flatnonzero(s.any(axis=0)):
                near = slice(max(c - 2, 0), c + 3)
                rows = np.flatnonzero(s[:, c])
                assert rows.min() >= ft[near].min() - 2 and rows.max() <= fb[near].max() + 2, (
                    line,
                    c,
                )
        # Not a trivial match: the whole frames are close but not equal (bodies, lines differ).
        assert 0.8 < (fast[i] == slow[i]).mean() < 1.0


# ---- chartrl chart ---------------------------------------------------------------------------


@pytest.fixture
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    from chartrl.market.store import CandleStore
    from chartrl.testing.synthetic import synthetic_candles

    data = tmp_path / "data"
    monkeypatch.setenv("CHARTRL_DATA_DIR", str(data))
    c = synthetic_candles(400, seed=2)
    CandleStore(data).ingest("binance", "BTC/USDT", "1h", c, source="test")
    return c


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from chartrl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--log-format", "json", "--log-level", "warning", *argv])
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_chart_command_writes_both_pngs(
    stored: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    t_png = tmp_path / "t.png"
    code, out, err = _run(
        ["chart", "--renderer", "tensor", "--scale", "3", "--out", str(t_png)], capsys
    )
    assert code == 0, err
    img = np.asarray(Image.open(t_png))
    assert img.shape == (300, 420, 3) and "tensor" in out
    # Nearest-neighbour upscale of the last candle's frame, channels as colours.
    frame = TensorRenderer(stored, ChartSpec()).render([len(stored) - 1])[0].numpy()
    assert np.array_equal(img[::3, ::3] > 0, np.moveaxis(frame, 0, -1) > 0)
    m_png = tmp_path / "m.png"
    at = stored["timestamp"].iloc[350].strftime("%Y-%m-%dT%H:%M")
    code, out, err = _run(["chart", "--at", at, "--out", str(m_png)], capsys)
    assert code == 0, err
    assert Image.open(m_png).size[0] > 600 and at.replace("T", " ") in out


def test_chart_command_refuses_early_or_unknown_times(
    stored: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    first = stored["timestamp"].iloc[warmup(ChartSpec()) + 249].strftime("%Y-%m-%d %H:%M")
    code, _, err = _run(["chart", "--at", stored["timestamp"].iloc[10].isoformat()], capsys)
    assert (
        code == 2 and f"first valid candle is {first}" in err and len(err.strip().splitlines()) == 1
    )
    code, _, err = _run(["chart", "--at", "2030-01-01"], capsys)
    assert code == 2 and "outside the stored candles" in err
    code, _, err = _run(["chart", "--scale", "0"], capsys)
    assert code == 2 and "--scale" in err


def test_chart_command_names_both_neighbours_of_a_time_between_candles(
    stored: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    t = stored["timestamp"]
    between = (t.iloc[350] + pd.Timedelta(minutes=20)).strftime(
        "%Y-%m-%dT%H:%M"
    )  # nearer the earlier candle
    code, _, err = _run(["chart", "--at", between], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"around it open at {t.iloc[350]:%Y-%m-%d %H:%M} and {t.iloc[351]:%Y-%m-%d %H:%M}" in err


def test_chart_command_checks_out_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "CHARTRL_DATA_DIR", str(tmp_path / "empty")
    )  # nothing stored: only an early check can answer
    code, _, err = _run(["chart", "--out", str(tmp_path / "c.txt")], capsys)
    assert code == 2 and "must end in .png" in err


@pytest.mark.parametrize("renderer", ["tensor", "mplfinance"])
def test_chart_command_names_an_unwritable_out(
    renderer: str, stored: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["chart", "--renderer", renderer, "--out", "/proc/nope/x.png"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--out /proc/nope/x.png: cannot write there" in err and "Traceback" not in err
