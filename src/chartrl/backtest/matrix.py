"""The transfer matrix: one model replayed on several series (``chartrl backtest --series``).

A table (series x metrics, each beside buy-and-hold on the same candles, with the skill test's
p-value) and one equity figure with a panel per series. Returns, Sharpe ratios and drawdowns
carry no currency, so series quoted in USDT and in BTC sit in one table; final equity is in each
series' own quote and labelled so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from chartrl.backtest.report import fmt
from chartrl.backtest.runner import BacktestResult

COLUMNS = [
    ("series_in_training", "in training", "bool"),
    ("total_return", "return", "pct"),
    ("buyhold_total_return", "buy & hold return", "pct"),
    ("sharpe", "Sharpe", "f2"),
    ("buyhold_sharpe", "buy & hold Sharpe", "f2"),
    ("max_drawdown", "max DD", "pct"),
    ("buyhold_max_drawdown", "buy & hold max DD", "pct"),
    ("trades", "trades", "int"),
    ("exposure", "exposure", "pct"),
    ("skill_p_value", "skill p", "p"),
    ("dsr", "DSR", "f2"),
]


def matrix_rows(rows: Sequence[tuple[str, dict, Any, Any]]) -> pd.DataFrame:
    """One row per series: its metrics and buy-and-hold's on the same candles."""
    out = []
    for name, m, _result, _baseline in rows:
        b = m["baselines"]["buyhold"]
        out.append(
            {
                "series": name,
                "start": m.get("start"),
                "end": m.get("end"),
                "candles": m.get("candles"),
                "quote_currency": m.get("quote_currency"),
                "series_in_training": m.get("series_in_training"),
                **{k: m.get(k) for k in ("total_return", "sharpe", "max_drawdown", "trades")},
                "exposure": m.get("exposure"),
                "skill_p_value": m.get("skill_p_value"),
                "dsr": (m.get("deflated_sharpe") or {}).get("dsr"),
                "final_equity": m.get("final_equity"),
                **{f"buyhold_{k}": b.get(k) for k in ("total_return", "sharpe", "max_drawdown")},
            }
        )
    return pd.DataFrame(out)


def _cell(value: Any, kind: str) -> str:
    if kind == "bool":
        return "n/a (rule)" if value is None else ("yes" if value else "**no: transfer**")
    if kind == "p":
        return "n/a" if value is None else f"{value:.3f}"
    return fmt(value, kind)


def matrix_markdown(frame: pd.DataFrame, strategy: str) -> str:
    head = "| series | period | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    rule = "|---|---|" + "---:|" * len(COLUMNS)
    lines = [f"# Transfer matrix: {strategy}", "", head, rule]
    for r in frame.to_dict("records"):
        period = f"{str(r['start'])[:10]} .. {str(r['end'])[:10]}"
        cells = [_cell(None if pd.isna(r[k]) else r[k], kind) for k, _, kind in COLUMNS]
        lines.append(f"| {r['series']} | {period} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each series is replayed on its own candles, with its own market's fills, in its own quote "
        "currency (final equity per series in matrix.csv, labelled by `quote_currency`). "
        "'skill p' is the skill test's p-value (random timing of the same round trips); DSR is "
        "the deflated Sharpe ratio for the --trials given. Reports per series: `<series>/report.md`.",
        "",
        "![equity vs buy and hold, one panel per series](matrix.png)",
        "",
    ]
    return "\n".join(lines)


def write_matrix(
    out: Path, rows: Sequence[tuple[str, dict, BacktestResult, BacktestResult]]
) -> str:
    """matrix.md, matrix.csv and matrix.png into ``out``; returns the markdown table."""
    from chartrl.backtest.plots import plot_panels

    out.mkdir(parents=True, exist_ok=True)
    frame = matrix_rows(rows)
    frame.to_csv(out / "matrix.csv", index=False, float_format="%.10g")
    strategy = rows[0][1].get("strategy", "model") if rows else "model"
    text = matrix_markdown(frame, strategy)
    (out / "matrix.md").write_text(text)
    panels = []
    for name, m, result, baseline in rows:
        tag = " (transfer)" if m.get("series_in_training") is False else ""
        panels.append(
            (
                f"{name}{tag}",
                [
                    (strategy, result.candles["timestamp"], result.equity),
                    ("buy and hold", baseline.candles["timestamp"], baseline.equity),
                ],
            )
        )
    plot_panels(out / "matrix.png", panels, f"{strategy}: equity vs buy and hold per series")
    return text
