"""The batched chart renderer: windows of candles straight into uint8 tensors (B, C, H, W).

This is the training hot path, so nothing here loops over pixels, candles or charts in Python:

1. Once per series (``__init__``): indicators (``compute_indicators``), per-candle validity, and,
   for every quantity a column aggregates (high, low, volume, lines), sparse tables of range
   max/min (level k holds the max/min of 2**k consecutive candles), plus rolling per-window
   extents (price min/max including MAs and bands, volume max, MACD min/max). All of these are
   causal at the window level: a window ending at t only ever reads candles inside it.
2. Per batch (``render``): a handful of row gathers give every column's aggregates for all
   charts at once, (B, W, S); scaling to rows is elementwise arithmetic on those small arrays
   (about 30 numbers per column against 300 pixels).
3. Rasterisation: every element is one vertical run [top, stop) per column with an additive
   weight (layout). ``+weight`` is scattered at ``top`` and ``-weight`` at ``stop`` of a uint8
   buffer laid out rows-first, (H+1, B, C, W); a running sum down the rows (one contiguous
   (B, C, W) slab per row, so H vectorised adds however many charts) turns the differences into
   pixel values, and one strided copy lays them out as (B, C, H, W). The image costs about three
   passes over its bytes however many elements are drawn.

See chart/layout.py for what the pixels mean and docs/chart.md for the figures.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from chartrl.chart import layout
from chartrl.chart.indicators import compute_indicators, ma_column
from chartrl.chart.spec import ChartSpec
from chartrl.errors import DataError
from chartrl.logs import get_logger

log = get_logger(__name__)

spec_channels = layout.spec_channels
_CHUNK = 128  # charts rasterised at once: a ~5 MB uint8 buffer for the default spec (stays in L3)


def _sparse_table(x: np.ndarray, levels: int) -> np.ndarray:
    """(levels * N, S) from (N, S): row k*N + i = max over x[i : i + 2**k] (edge-padded)."""
    out = [x]
    for k in range(1, levels):
        half = 1 << (k - 1)
        prev = out[-1]
        shifted = np.concatenate([prev[half:], np.repeat(prev[-1:], half, axis=0)])
        out.append(np.maximum(prev, shifted))
    return np.concatenate(out)


def _rolling(x: np.ndarray, window: int, how: str) -> np.ndarray:
    r = pd.Series(x).rolling(window, min_periods=window)
    return (r.max() if how == "max" else r.min()).to_numpy(dtype=np.float64)


def _f32(a: np.ndarray | pd.Series) -> np.ndarray:
    # NaNs (warm-up, bad rows) only ever sit in windows that valid_indices excludes.
    return np.nan_to_num(np.asarray(a, dtype=np.float64)).astype(np.float32)


class _RangeMax:
    """Max of several series over a fixed candle range per column, for a batch of windows.

    A min is the max of the negated series, so one table serves both. Range [a, a+L) is covered
    by two (possibly overlapping) blocks of 2**floor(log2 L) candles: two gathers per batch.
    """

    def __init__(
        self, series: np.ndarray, starts: np.ndarray, stops: np.ndarray, device: torch.device
    ):
        n = series.shape[0]
        lengths = stops - starts
        k = np.floor(np.log2(lengths)).astype(np.int64)
        self.table = torch.as_tensor(
            np.ascontiguousarray(_sparse_table(series, int(k.max()) + 1).T), device=device
        )
        self.off_a = torch.as_tensor(k * n + starts, device=device)
        off_b = k * n + stops - (1 << k)
        self.off_b = (
            None if (off_b == k * n + starts).all() else torch.as_tensor(off_b, device=device)
        )

    def __call__(self, t0: torch.Tensor) -> torch.Tensor:
        """(S, B, W) aggregates for the windows starting at ``t0``."""
        b, w = len(t0), len(self.off_a)
        a = self.table.index_select(1, (t0[:, None] + self.off_a).view(-1))
        if self.off_b is not None:
            a = torch.maximum(a, self.table.index_select(1, (t0[:, None] + self.off_b).view(-1)))
        return a.view(-1, b, w)


class TensorRenderer:
    """Renders the charts of one candle series under one ChartSpec.

    ``valid_indices`` lists the candles t whose chart exists: the window [t - window + 1, t] is
    complete, its candles are finite and its indicators defined (and, with diff_frame, the same
    holds for t - 1). ``render(ends)`` returns the charts for the decisions at those candles'
    closes as uint8 (B, C, H, W) on ``device``. Deterministic: the same inputs give the same
    bytes. It uses torch's intra-op threads (``torch.set_num_threads``) as the caller set them.
    """

    def __init__(
        self, candles: pd.DataFrame, spec: ChartSpec, device: str | torch.device = "cpu"
    ) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.channels = layout.spec_channels(spec)
        self.panels = spec.panels()
        self.elements = layout.elements(spec)
        ind = compute_indicators(candles, spec)
        self.timestamps = (
            candles["timestamp"].reset_index(drop=True) if "timestamp" in candles.columns else None
        )
        self.n = len(candles)
        f64 = {
            c: candles[c].to_numpy(dtype=np.float64)
            for c in ("open", "high", "low", "close", "volume")
        }
        self.valid_indices = self._valid(f64, ind)

        self._price_lines = [ma_column(p) for p in spec.ma_periods] + (
            ["bb_upper", "bb_lower"] if spec.bollinger_period else []
        )
        self._osc_lines = {"rsi": ["rsi"], "macd": ["macd", "macd_signal"], "none": []}[
            spec.oscillator
        ]
        self._build_tables(f64, ind)
        self._build_plan()
        self._bases: dict[int, dict] = {}  # per chunk size; so one renderer is not thread-safe

    def _build_tables(self, f64: dict[str, np.ndarray], ind: pd.DataFrame) -> None:
        spec, dev = self.spec, self.device
        macd = spec.oscillator == "macd"
        cols = layout.columns(spec.window, spec.width)
        # Candle scheme (a column's own candles): high, low, volume, [hist max, hist min].
        cs = [f64["high"], -f64["low"], f64["volume"]] + (
            [ind["macd_hist"], -ind["macd_hist"]] if macd else []
        )
        self._candle = _RangeMax(np.column_stack([_f32(x) for x in cs]), cols.start, cols.stop, dev)
        self._candle_sign = torch.tensor(
            [1.0, -1.0, 1.0] + ([1.0, -1.0] if macd else []), device=dev
        )[:, None, None]
        # Line scheme (from the previous column's last candle): every line's max, then its min.
        lines = [ind[c] for c in self._price_lines + self._osc_lines]
        self._lines = None
        if lines:
            self._lines = _RangeMax(
                np.column_stack([_f32(x) for x in lines] + [_f32(-x) for x in lines]),
                cols.line_start,
                cols.stop,
                dev,
            )
            self._line_sign = torch.tensor([1.0] * len(lines) + [-1.0] * len(lines), device=dev)[
                :, None, None
            ]
        self._open = torch.as_tensor(_f32(f64["open"]), device=dev)
        self._close = torch.as_tensor(_f32(f64["close"]), device=dev)
        self._first = torch.as_tensor(cols.start, device=dev)
        self._last = torch.as_tensor(cols.stop - 1, device=dev)

        # Per-window extents, one value per window end t (rolling over exactly the window).
        w = spec.window
        plo = np.fmin.reduce([f64["low"]] + [ind[c].to_numpy() for c in self._price_lines])
        phi = np.fmax.reduce([f64["high"]] + [ind[c].to_numpy() for c in self._price_lines])
        ext = [
            _rolling(plo, w, "min"),
            _rolling(phi, w, "max"),
            np.zeros(self.n),
            _rolling(f64["volume"], w, "max"),
        ]
        if macd:
            m = ind[["macd", "macd_signal", "macd_hist"]].to_numpy()
            ext += [
                _rolling(np.minimum(m.min(axis=1), 0.0), w, "min"),
                _rolling(np.maximum(m.max(axis=1), 0.0), w, "max"),
            ]
        else:
            ext += [np.zeros(self.n), np.full(self.n, 100.0)]  # RSI's fixed 0..100 scale
        self._ext = torch.as_tensor(
            np.stack([_f32(x) for x in ext]), device=dev
        )  # (6, N): lo, hi per panel

    def _build_plan(self) -> None:
        """Which quantity gives each element's top and stop row, and the values it adds."""
        spec, dev = self.spec, self.device
        macd = spec.oscillator == "macd"
        # Quantities, in the order _runs stacks them: candle aggregates, line aggregates, body
        # top, body bottom, zero (the volume panel's floor).
        q = ["high", "low", "volume"] + (["hist_max", "hist_min"] if macd else [])
        q += [f"max:{c}" for c in self._price_lines + self._osc_lines] + [
            f"min:{c}" for c in self._price_lines + self._osc_lines
        ]
        q += ["body_top", "body_bottom", "zero"]
        panel_of = {
            "volume": "volume",
            "zero": "volume",
            "hist_max": "oscillator",
            "hist_min": "oscillator",
        }
        panel_of |= {f"{m}:{c}": "oscillator" for c in self._osc_lines for m in ("max", "min")}
        names = list(self.panels)
        pid = [
            names.index(panel_of.get(x, "price")) if panel_of.get(x, "price") in names else 0
            for x in q
        ]
        ext_row = [("price", "volume", "oscillator").index(names[i]) for i in pid]
        self._q_lo = torch.tensor([2 * e for e in ext_row], device=dev)
        self._q_hi = torch.tensor([2 * e + 1 for e in ext_row], device=dev)
        p0 = torch.tensor([self.panels[names[i]][0] for i in pid], dtype=torch.float32, device=dev)[
            :, None, None
        ]
        p1 = torch.tensor([self.panels[names[i]][1] for i in pid], dtype=torch.float32, device=dev)[
            :, None, None
        ]
        self._q_bottom, self._q_top, self._q_span = p1 - 1, p0, p1 - p0 - 1
        top_of = {
            "wick": "high",
            "body_up": "body_top",
            "body_down": "body_top",
            "volume_up": "volume",
            "volume_down": "volume",
            "macd_hist": "hist_max",
        }
        bottom_of = {
            "wick": "low",
            "body_up": "body_bottom",
            "body_down": "body_bottom",
            "volume_up": "zero",
            "volume_down": "zero",
            "macd_hist": "hist_min",
        }
        tops = [q.index(top_of.get(e.name, f"max:{e.name}")) for e in self.elements]
        bottoms = [q.index(bottom_of.get(e.name, f"min:{e.name}")) for e in self.elements]
        self._sel = torch.tensor(tops + bottoms, device=dev)
        w_up = [0 if e.name in ("body_down", "volume_down") else e.weight for e in self.elements]
        w_down = [0 if e.name in ("body_up", "volume_up") else e.weight for e in self.elements]
        # The stop row gets -weight (mod 256): the running sum then ends the run there.
        self._src_up = torch.tensor(w_up + [-x % 256 for x in w_up], dtype=torch.uint8, device=dev)[
            :, None, None
        ]
        self._src_down = torch.tensor(
            w_down + [-x % 256 for x in w_down], dtype=torch.uint8, device=dev
        )[:, None, None]
        # A stop is one row below the bottom quantity's row: +1 row of the (H+1, B, C, W) buffer.
        self._stop_row = torch.tensor([0] * len(tops) + [1] * len(bottoms), device=dev)[
            :, None, None
        ]
        self._el_channel = torch.tensor([e.channel for e in self.elements] * 2, device=dev)[
            :, None, None
        ]

    # ---- validity ----------------------------------------------------------------------------

    def _valid(self, f64: dict[str, np.ndarray], ind: pd.DataFrame) -> np.ndarray:
        w, n = self.spec.window, self.n
        ohlcv = np.column_stack([f64[c] for c in ("open", "high", "low", "close", "volume")])
        with np.errstate(invalid="ignore"):
            bad_data = (
                ~np.isfinite(ohlcv).all(axis=1)
                | (f64["high"] < f64["low"])
                | (ohlcv[:, :4] <= 0).any(axis=1)
            )
            bad_data |= f64["volume"] < 0
        bad = bad_data | ~np.isfinite(ind.to_numpy(dtype=np.float64)).all(axis=1)
        if bad_data.any():
            rows = np.flatnonzero(bad_data)
            log.warning(
                "chart_bad_candles_excluded",
                rows=int(rows.size),
                first_row=int(rows[0]),
                rule="windows containing a non-finite, non-positive or high<low candle are not rendered",
            )
        cs = np.concatenate([[0], np.cumsum(bad)])
        t = np.arange(w - 1, n)
        ok = np.zeros(n, dtype=bool)
        ok[t] = cs[t + 1] - cs[t + 1 - w] == 0
        if self.spec.diff_frame:
            ok[1:] &= ok[:-1].copy()
            ok[0] = False
        return np.flatnonzero(ok).astype(np.int64)

    def index_of(self, timestamp: pd.Timestamp | str) -> int:
        """Position of the candle opened at ``timestamp`` (DataError when absent)."""
        if self.timestamps is None:
            raise DataError("the candle frame has no timestamp column")
        ts = pd.Timestamp(timestamp)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        pos = int(self.timestamps.searchsorted(ts))
        if pos >= self.n or self.timestamps.iloc[pos] != ts:
            raise DataError(f"no candle opens at {ts:%Y-%m-%d %H:%M} UTC in this series")
        return pos

    # ---- rendering ---------------------------------------------------------------------------

    def render(
        self, end_indices: np.ndarray | torch.Tensor | list[int], out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """uint8 (B, C, H, W) charts for the windows ending at ``end_indices`` (all must be valid).

        ``out`` (optional, (B, C, H, W) uint8 on the device) is filled and returned instead of a
        new tensor: reusing one saves the page faults of a fresh multi-MB allocation per batch.
        """
        if isinstance(end_indices, torch.Tensor):
            ends = end_indices.to(device=self.device, dtype=torch.int64).reshape(-1)
        else:
            ends = torch.as_tensor(
                np.asarray(end_indices, dtype=np.int64).reshape(-1), device=self.device
            )
        self._check(ends)
        shape = (len(ends), self.channels, self.spec.height, self.spec.width)
        if out is not None and (
            tuple(out.shape) != shape or out.dtype != torch.uint8 or out.device != self.device
        ):
            raise ValueError(
                f"out must be uint8 {shape} on {self.device}, got {out.dtype} {tuple(out.shape)} on {out.device}"
            )
        if out is None:
            out = torch.empty(shape, dtype=torch.uint8, device=self.device)
        if not self.spec.diff_frame:
            self._render_base(ends, out)
            return out
        # The previous frames of a run of consecutive ends are mostly frames of the batch itself.
        uniq, inv = torch.unique(torch.cat([ends, ends - 1]), return_inverse=True)
        frames = self._render_base(
            uniq,
            torch.empty(
                (len(uniq), self.spec.channels) + shape[2:], dtype=torch.uint8, device=self.device
            ),
        )
        c = self.spec.channels
        out[:, :c] = frames[inv[: len(ends)]]
        prev = frames[inv[len(ends) :]]
        out[:, c:] = (
            (out[:, :c].to(torch.int16) - prev.to(torch.int16))
            .div_(2, rounding_mode="floor")
            .add_(128)
            .to(torch.uint8)
        )
        return out

    def render_all(
        self, batch_size: int = 512, indices: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield ``(end_indices, frames)`` batches over ``indices`` (default: every valid index), in order."""
        idx = self.valid_indices if indices is None else np.asarray(indices, dtype=np.int64)
        for i in range(0, len(idx), batch_size):
            chunk = idx[i : i + batch_size]
            yield chunk, self.render(chunk)

    def _check(self, ends: torch.Tensor) -> None:
        if ends.numel() == 0:
            return
        e = ends.cpu().numpy()
        pos = np.searchsorted(self.valid_indices, e)
        ok = (pos < len(self.valid_indices)) & (
            self.valid_indices[np.minimum(pos, len(self.valid_indices) - 1)] == e
        )
        if not ok.all():
            first = int(self.valid_indices[0]) if len(self.valid_indices) else None
            raise DataError(
                f"candle {int(e[~ok][0])} has no complete chart window (first valid index: {first}); "
                "use TensorRenderer.valid_indices"
            )

    def _render_base(self, ends: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        for i in range(0, len(ends), _CHUNK):
            self._rasterise(ends[i : i + _CHUNK], out[i : i + _CHUNK])
        return out

    def _runs(self, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of every quantity (Q, B, W) int64 and the up-column mask (B, W)."""
        t0 = ends - (self.spec.window - 1)
        parts = [self._candle(t0) * self._candle_sign]
        if self._lines is not None:
            parts.append(self._lines(t0) * self._line_sign)
        o = self._open[t0[:, None] + self._first]
        c = self._close[t0[:, None] + self._last]
        high, low = parts[0][0], parts[0][1]
        # Clamped into the wick so a body pixel is always wick + body (see layout).
        parts.append(
            torch.stack(
                [
                    torch.minimum(torch.maximum(o, c), high),
                    torch.maximum(torch.minimum(o, c), low),
                    torch.zeros_like(o),
                ]
            )
        )
        v = torch.cat(parts)
        if self.spec.oscillator == "macd":
            v[3].clamp_(min=0.0)  # histogram bars grow from zero
            v[4].clamp_(max=0.0)
        ext = self._ext[:, ends]  # (6, B)
        lo, hi = (
            ext.index_select(0, self._q_lo)[..., None],
            ext.index_select(0, self._q_hi)[..., None],
        )
        y = torch.round((v - lo) * (self._q_span / torch.clamp(hi - lo, min=1e-12)))
        y = torch.clamp(self._q_bottom - y, self._q_top, self._q_bottom)
        return y.to(torch.int64), c >= o

    def _workspace(self, b: int) -> dict:
        """Buffers for chunks of ``b`` charts, allocated once: fresh multi-MB allocations cost page
        faults on every chunk (they were the largest single cost when profiled)."""
        if b not in self._bases:
            c, w, h = self.spec.channels, self.spec.width, self.spec.height
            chart = torch.arange(b, device=self.device)[None, :, None] * (c * w)
            col = torch.arange(w, device=self.device)[None, None, :]
            buf = torch.empty((h + 1) * b * c * w, dtype=torch.uint8, device=self.device)
            self._bases[b] = {
                "base": chart + col + self._el_channel * w + self._stop_row * (b * c * w),
                "idx": torch.empty((len(self._sel), b, w), dtype=torch.int64, device=self.device),
                "src": torch.empty((len(self._sel), b, w), dtype=torch.uint8, device=self.device),
                "buf": buf,
                "rows": buf.view(h + 1, b * c * w).unbind(0),
            }
        return self._bases[b]

    def _rasterise(self, ends: torch.Tensor, out: torch.Tensor) -> None:
        """Draw the charts of ``ends`` into ``out`` (B, C, H, W).

        The work happens in a rows-first (H + 1, B, C, W) buffer: each element adds its value at
        its top row and subtracts it at its stop row (uint8, wrapping; the true sums stay <= 255),
        then a running sum down the rows, one contiguous (B, C, W) slab at a time, fills the runs.
        """
        H, W, B, C = self.spec.height, self.spec.width, len(ends), self.spec.channels
        ws = self._workspace(B)
        rows, up = self._runs(ends)
        idx = torch.index_select(rows, 0, self._sel, out=ws["idx"]).mul_(B * C * W).add_(ws["base"])
        src = torch.where(up[None], self._src_up, self._src_down, out=ws["src"])
        buf = ws["buf"].zero_()
        buf.scatter_add_(0, idx.view(-1), src.view(-1))
        r = ws["rows"]
        for i in range(1, H):  # H vectorised adds over all charts, not a loop over pixels
            torch.add(r[i], r[i - 1], out=r[i])
        out.copy_(buf.view(H + 1, B, C, W)[:H].permute(1, 2, 0, 3))
