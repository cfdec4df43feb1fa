"""``report.html``: the figures of ``report.md``, interactive (plotly), in one self-contained file.

Equity against buy and hold with the drawdown underneath, the candles of the whole period with
every fill marked (zoom with the range slider or a drag, double-click to reset), and the metrics
table. plotly.js is embedded from the installed ``plotly`` package: the file opens offline.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from chartrl.backtest.metrics import drawdown_series
from chartrl.backtest.runner import BacktestResult


def write_html(
    path: Path,
    title: str,
    table_rows: list[tuple[str, list[str]]],
    columns: list[str],
    result: BacktestResult,
    baseline: BacktestResult,
    notes: list[str],
) -> None:
    """``table_rows``: (label, one formatted value per column), as the markdown table has them."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ts = result.candles["timestamp"]
    eq = np.asarray(result.equity, dtype=np.float64)
    hold = np.asarray(baseline.equity, dtype=np.float64)
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.04
    )
    fig.add_scatter(x=ts, y=eq / eq[0], name=result.strategy, line={"color": "#1f77b4"})
    fig.add_scatter(
        x=baseline.candles["timestamp"],
        y=hold / hold[0],
        name="buy and hold",
        line={"color": "#888"},
    )
    fig.add_scatter(
        x=ts,
        y=drawdown_series(eq) * 100,
        name="drawdown %",
        fill="tozeroy",
        line={"color": "#c62828", "width": 1},
        row=2,
        col=1,
    )
    fig.update_yaxes(title_text="equity (start = 1)", type="log", row=1, col=1)
    fig.update_yaxes(title_text="drawdown %", row=2, col=1)
    fig.update_layout(height=560, hovermode="x unified", margin={"t": 30, "b": 30})

    c = result.candles
    trades = go.Figure(
        go.Candlestick(
            x=c["timestamp"],
            open=c["open"],
            high=c["high"],
            low=c["low"],
            close=c["close"],
            name="candles",
        )
    )
    for side, symbol, color in (
        ("buy", "triangle-up", "#2ca02c"),
        ("sell", "triangle-down", "#d62728"),
    ):
        picked = [
            (f, i) for f, i in zip(result.fills, result.fill_index, strict=True) if f.side == side
        ]
        trades.add_scatter(
            x=[c["timestamp"].iloc[int(i)] for _f, i in picked],
            y=[f.price for f, _i in picked],
            mode="markers",
            name=side,
            marker={"symbol": symbol, "size": 10, "color": color, "line": {"width": 1}},
            text=[f"{side} {f.amount:.6f} @ {f.price:,.2f}" for f, _i in picked],
            hoverinfo="text+x",
        )
    trades.update_layout(
        height=560, margin={"t": 30, "b": 30}, xaxis_rangeslider_visible=True, yaxis_title="price"
    )

    head = "".join(f"<th>{html.escape(x)}</th>" for x in ["metric", *columns])
    body = "".join(
        "<tr><td>"
        + html.escape(label)
        + "</td>"
        + "".join(f"<td class=n>{html.escape(v)}</td>" for v in values)
        + "</tr>"
        for label, values in table_rows
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:16px auto;max-width:1200px;padding:0 8px}}
table{{border-collapse:collapse}}td,th{{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}}
td.n{{text-align:right}}.note{{background:#fff3cd;padding:8px}}</style></head><body>
<h1>{html.escape(title)}</h1>
{"".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)}
<h2>Equity</h2>{fig.to_html(full_html=False, include_plotlyjs=True)}
<h2>Trades</h2><p>Every fill, at the open of the candle that filled it: drag to zoom, double-click to reset.</p>
{trades.to_html(full_html=False, include_plotlyjs=False)}
<h2>Metrics</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>All figures: metrics.json; every decision: decisions.csv; the text report: report.md.</p>
</body></html>"""
    path.write_text(page)
