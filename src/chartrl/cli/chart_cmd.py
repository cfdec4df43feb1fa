"""chartrl chart: draw the chart of one stored candle as a PNG (mplfinance, or the model's tensor)."""

from __future__ import annotations

import argparse
from pathlib import Path

from chartrl.cli.app import add_series_options, parse_date, settings
from chartrl.errors import DataError, UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chart",
        help="draw the chart of one stored candle as a PNG",
        description="Draw the chart window that ends at one stored candle (the picture the policy decides on at "
        "that candle's close). --renderer mplfinance draws it for people; --renderer tensor writes the model's "
        "input tensor, upscaled, its channels as colours (red candles, green MAs/bands, blue volume/oscillator).",
    )
    add_series_options(p, date_range=False)
    p.add_argument(
        "--at",
        metavar="TIMESTAMP",
        help="open time of the window's last candle, UTC, ISO 8601 (default: the last stored candle)",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE.png",
        help="output file (default: chart-<symbol>-<timeframe>-<time>-<renderer>.png)",
    )
    p.add_argument(
        "--renderer",
        choices=["mplfinance", "tensor"],
        default="mplfinance",
        help="mplfinance (default) or tensor",
    )
    p.add_argument(
        "--scale",
        type=int,
        default=4,
        metavar="N",
        help="tensor renderer: upscale N times, nearest neighbour (default 4)",
    )
    p.add_argument(
        "--dpi", type=int, default=100, help="mplfinance renderer: dots per inch (default 100)"
    )
    p.set_defaults(func=_chart)


def _chart(args: argparse.Namespace) -> None:
    import pandas as pd

    from chartrl.chart.tensor_render import TensorRenderer
    from chartrl.logs import get_logger
    from chartrl.market.store import CandleStore

    if not 1 <= args.scale <= 64:
        raise UsageError(f"--scale {args.scale} must be between 1 and 64")
    if not 20 <= args.dpi <= 600:
        raise UsageError(f"--dpi {args.dpi} must be between 20 and 600")
    if (
        args.out is not None and args.out.suffix.lower() != ".png"
    ):  # before the seconds spent loading
        raise UsageError(f"--out {args.out} must end in .png")
    at = parse_date(args.at, "--at")
    s = settings(args)
    ex, sym, tf = s.exchange.id, s.market.symbol, s.market.timeframe
    candles = CandleStore(s.data_dir).load(ex, sym, tf)
    spec = s.chart
    renderer = TensorRenderer(candles, spec)
    if not len(renderer.valid_indices):
        raise DataError(
            f"{ex} {sym} {tf} has {len(candles)} candles and no complete chart window "
            f"({spec.window} candles plus indicator warm-up); fetch or import more history"
        )
    idx = _index_at(renderer, candles, at)
    ts = candles["timestamp"].iloc[idx]
    out = args.out or Path(
        f"chart-{sym.replace('/', '')}-{tf}-{ts:%Y%m%d-%H%M}-{args.renderer}.png"
    )
    try:
        if args.renderer == "tensor":
            size = _write_tensor_png(renderer.render([idx])[0], spec, out, args.scale)
        else:
            from chartrl.chart.mpl_render import render_png

            render_png(candles, spec, idx, out, dpi=args.dpi, title=f"{ex} {sym} {tf}")
            size = None
    except OSError as exc:
        raise UsageError(
            f"--out {out}: cannot write there ({exc.strerror or exc}); pick a writable path"
        ) from None
    get_logger(__name__).info(
        "chart_written", path=str(out), renderer=args.renderer, candle=str(ts)
    )
    extra = f", {size[0]}x{size[1]} px" if size else ""
    print(
        f"wrote {out} ({args.renderer}{extra}; {spec.window} candles ending {pd.Timestamp(ts):%Y-%m-%d %H:%M} UTC)"
    )


def _index_at(renderer, candles, at) -> int:  # noqa: ANN001 - TensorRenderer, DataFrame, datetime | None
    from chartrl.market.validate import fmt_ts

    valid = renderer.valid_indices
    first_ts = candles["timestamp"].iloc[int(valid[0])]
    if at is None:
        idx = len(candles) - 1
    else:
        ts = candles["timestamp"]
        if at < ts.iloc[0] or at > ts.iloc[-1]:
            raise UsageError(
                f"--at {fmt_ts(at)} is outside the stored candles ({fmt_ts(ts.iloc[0])} to {fmt_ts(ts.iloc[-1])})"
            )
        idx = int(ts.searchsorted(at))
        if ts.iloc[idx] != at:  # in range, so idx > 0: a stored candle lies on each side
            raise UsageError(
                f"--at {fmt_ts(at)}: no candle opens then; the stored ones around it open at "
                f"{fmt_ts(ts.iloc[idx - 1])} and {fmt_ts(ts.iloc[idx])}"
            )
    if idx < valid[0]:
        raise UsageError(
            f"--at {fmt_ts(candles['timestamp'].iloc[idx])} is before the first complete chart window; the first valid candle is {fmt_ts(first_ts)}"
        )
    pos = int(valid.searchsorted(idx))
    if pos >= len(valid) or valid[pos] != idx:
        later = valid[valid > idx]
        hint = (
            f"; the next valid candle is {fmt_ts(candles['timestamp'].iloc[int(later[0])])}"
            if len(later)
            else ""
        )
        raise DataError(
            f"the window ending {fmt_ts(candles['timestamp'].iloc[idx])} contains unusable candles{hint}"
        )
    return idx


def _write_tensor_png(frame, spec, out: Path, scale: int) -> tuple[int, int]:  # noqa: ANN001 - torch.Tensor, ChartSpec
    from PIL import Image

    img = tensor_image(frame, spec, scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(out)
    return img.shape[1], img.shape[0]


def tensor_image(frame, spec, scale: int):  # noqa: ANN001, ANN201 - torch.Tensor, ChartSpec -> (H, W, 3) uint8
    """The (C, H, W) frame as an RGB image: ch0/1/2 as red/green/blue (grey for one channel).

    Non-zero pixels are lifted to at least 64 so the faint low bits (grey bands weigh 4 and 2) stay visible to
    a person; diff-frame channels are drawn beside the frame (128 = unchanged = mid grey).
    """
    import numpy as np

    a = frame.cpu().numpy().astype(np.int32)
    c = spec.channels

    def rgb(ch: np.ndarray, lift: bool) -> np.ndarray:
        if lift:
            ch = np.where(ch > 0, 64 + ch * 191 // 255, 0)
        img = np.repeat(ch, 3, axis=0) if ch.shape[0] == 1 else ch
        return np.moveaxis(img, 0, -1).astype(np.uint8)

    img = rgb(a[:c], lift=True)
    if spec.diff_frame:
        gap = np.full((spec.height, 2, 3), 255, dtype=np.uint8)
        img = np.concatenate([img, gap, rgb(a[c:], lift=False)], axis=1)
    return img.repeat(scale, axis=0).repeat(scale, axis=1)
