"""Chart rendering throughput: the batched tensor renderer against mplfinance, in one run.

    .venv/bin/python benchmarks/render.py [--csv PATH] [--seconds S] [--mpl-charts N] [--batch B]

Candles: the shared Binance BTC/USDT 1h file (imported with chartrl.market.importer), synthetic
candles when it is absent. Spec: the default ChartSpec (250 candles, 140x100, SMA 5/20,
Bollinger 20/2, volume, RSI 14, 3 channels).

- tensor: ``TensorRenderer.render`` over every valid window in batches (fresh output tensors,
  as a training loop gets them), torch using all cores (``torch.set_num_threads(os.cpu_count())``);
  also reported on one thread. Best of the repeats, because the machine is shared.
- mplfinance: one ``mpf.plot`` per chart with the same elements (candles, volume, SMAs, bands,
  RSI panel) at 140x100 px into an Agg canvas, read back as an array: what a pipeline without
  the tensor renderer would do. Also the fidelity path (``render_tensor_mpl``), which draws each
  element separately and is slower still.

The last line is ``RESULT tensor_cps=<n> mpl_cps=<n> ratio=<n>`` (ratio = tensor / mplfinance).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
SHARED = (
    Path(os.environ.get("CHARTRL_SHARED_DATA", REPO.parent / "shared" / "data"))
    / "Binance_BTCUSDT_1h.csv"
)


def load_candles(path: Path):  # noqa: ANN201 - DataFrame
    if path.is_file():
        from chartrl.market.importer import read_candle_csv
        from chartrl.market.validate import validate_candles

        parsed = read_candle_csv(path, symbol="BTC/USDT")
        clean, _ = validate_candles(parsed.frame, str(path), False, timeframe="1h")
        return clean, f"{path.name} ({len(clean)} candles)"
    from chartrl.testing.synthetic import synthetic_candles

    return synthetic_candles(20_000, seed=1), "synthetic (20000 candles; shared file absent)"


def bench_tensor(
    candles, spec, threads: int, batch: int, seconds: float, progress
) -> tuple[float, int]:  # noqa: ANN001
    import torch

    from chartrl.chart.tensor_render import TensorRenderer

    torch.set_num_threads(threads)
    r = TensorRenderer(candles, spec)
    idx = r.valid_indices
    r.render(idx[:batch])  # warm-up: workspaces, allocator
    best, rounds = 0.0, 0
    task = progress.add_task(f"tensor, {threads} thread(s)", total=seconds)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or rounds == 0:
        t = time.perf_counter()
        done = 0
        for i in range(0, len(idx), batch):
            done += r.render(idx[i : i + batch]).shape[0]
            if time.perf_counter() - t > seconds:
                break
        best = max(best, done / (time.perf_counter() - t))
        rounds += 1
        progress.update(task, completed=min(time.perf_counter() - start, seconds))
    return best, len(idx)


def mpl_chart_array(df, spec, dpi: int = 100) -> np.ndarray:  # noqa: ANN001
    """One chart through mplfinance at the tensor's pixel size, read back as (H, W, 3)."""
    import matplotlib.pyplot as plt
    import mplfinance as mpf

    ap = [mpf.make_addplot(df[f"sma_{p}"], width=0.5) for p in spec.ma_periods]
    ap += [mpf.make_addplot(df["bb_upper"], width=0.5), mpf.make_addplot(df["bb_lower"], width=0.5)]
    ap += [mpf.make_addplot(df["rsi"], panel=2, width=0.5, ylim=(0, 100))]
    fig, _ = mpf.plot(
        df[["Open", "High", "Low", "Close", "Volume"]],
        type="candle",
        volume=True,
        addplot=ap,
        axisoff=True,
        panel_ratios=(3, 1, 1),
        figsize=(spec.width / dpi, spec.height / dpi),
        returnfig=True,
        warn_too_much_data=10_000,
        style="default",
    )
    fig.set_dpi(dpi)
    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return arr


def bench_mpl(candles, spec, n: int, progress) -> tuple[float, float]:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg")
    from chartrl.chart.indicators import compute_indicators
    from chartrl.chart.mpl_render import _window, render_tensor_mpl
    from chartrl.chart.tensor_render import TensorRenderer

    ind = compute_indicators(candles, spec)
    valid = TensorRenderer(candles, spec).valid_indices
    ends = np.random.default_rng(0).choice(valid, n + 1, replace=False)
    mpl_chart_array(_window(candles, ind, spec, int(ends[0])), spec)  # warm-up: imports, fonts
    task = progress.add_task("mplfinance", total=n + 2)
    t = time.perf_counter()
    for e in ends[1:]:
        mpl_chart_array(_window(candles, ind, spec, int(e)), spec)
        progress.advance(task)
    plain = n / (time.perf_counter() - t)
    t = time.perf_counter()
    render_tensor_mpl(candles, spec, ends[1:3], indicators=ind)
    progress.advance(task, 2)
    fidelity = 2 / (time.perf_counter() - t)
    return plain, fidelity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=SHARED)
    ap.add_argument("--seconds", type=float, default=6.0, help="time budget per tensor measurement")
    ap.add_argument("--mpl-charts", type=int, default=6)
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()

    from rich.progress import Progress

    from chartrl.chart.spec import ChartSpec
    from chartrl.logs import configure_logging

    configure_logging(
        "error", "console", stream=sys.stderr
    )  # the importer's repair notes are not the point here
    spec = ChartSpec()
    candles, source = load_candles(args.csv)
    cores = os.cpu_count() or 1
    with Progress(transient=True) as progress:
        mpl_cps, fidelity_cps = bench_mpl(candles, spec, args.mpl_charts, progress)
        one, n = bench_tensor(candles, spec, 1, args.batch, args.seconds, progress)
        cps, _ = bench_tensor(candles, spec, cores, args.batch, args.seconds, progress)
    print(
        f"candles: {source}; spec: default ({spec.window} candles, {spec.width}x{spec.height}, {spec.channels} channels)"
    )
    print(
        f"tensor renderer, batch {args.batch}, {cores} threads: {cps:,.0f} charts/s  (1 thread: {one:,.0f}; {n} windows)"
    )
    print(
        f"mplfinance, one mpf.plot per chart at {spec.width}x{spec.height}: {mpl_cps:.2f} charts/s"
    )
    print(f"mplfinance fidelity path (render_tensor_mpl): {fidelity_cps:.2f} charts/s")
    print(f"RESULT tensor_cps={cps:.0f} mpl_cps={mpl_cps:.2f} ratio={cps / mpl_cps:.0f}")


if __name__ == "__main__":
    main()
