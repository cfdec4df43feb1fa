"""A backtest's output directory: metrics.json, decisions.csv, equity.png, trades.png, report.md and
report.html (the same figures, interactive).

Every file names the strategy; a cheating strategy (the oracle, which reads future candles) is
flagged in every one of them, so its figures are never mistaken for a result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chartrl.backtest.provenance import (
    name_of,
    overlaps,
    provenance,
    quote_of,
    training_range,
    transfer_lines,
)
from chartrl.backtest.runner import BacktestResult

CHEATING_NOTE = (
    "CHEATING: this strategy reads future candles (the oracle labeller); its figures are an upper "
    "bound for comparison, not a result any real strategy could reach."
)

# (key, label, format) of the metrics table, in reading order.
TABLE = [
    ("total_return", "Total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("sharpe", "Sharpe (annualised)", "f2"),
    ("sortino", "Sortino (annualised)", "f2"),
    ("calmar", "Calmar", "f2"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("profit_factor", "Profit factor", "f2"),
    ("expectancy", "Expectancy per trade", "pct"),
    ("win_rate", "Win rate", "pct"),
    ("trades", "Trades (round trips)", "int"),
    ("exposure", "Exposure", "pct"),
    ("fees_paid", "Fees paid", "money"),
    ("turnover", "Turnover", "money"),
    ("final_equity", "Final equity", "money"),
    ("candles", "Candles", "int"),
]


def fmt(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{value * 100:.2f} %"
    if kind == "f2":
        return f"{value:.2f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "money":
        return f"{value:,.2f}"
    return str(value)


def chain_results(results: Sequence[BacktestResult]) -> BacktestResult:
    """Consecutive runs (walk-forward test folds) as one curve whose returns are exactly the runs'
    returns, compounded: each run is rescaled (equity, position, cash and fill amounts and fees
    alike) to start where the previous one ended, and its first point, which repeats that end, is
    dropped with its candle, so no flat return is invented between folds. A run's position still
    open at its end is no round trip, as in that run's own metrics (see ``round_trips``)."""
    if len(results) == 1:
        return results[0]
    equity, position, cash, fills, fill_index, frames = [], [], [], [], [], []
    offset = 0
    for i, r in enumerate(results):
        skip = 1 if i else 0
        scale = equity[-1][-1] / r.equity[0] if i else 1.0
        equity.append(r.equity[skip:] * scale)
        position.append(r.position[skip:] * scale)
        cash.append(r.cash[skip:] * scale)
        fills.extend(replace(f, amount=f.amount * scale, fee=f.fee * scale) for f in r.fills)
        fill_index.append(r.fill_index - skip + offset)  # a fill is never at a run's first candle
        frames.append(r.candles.iloc[skip:])
        offset += len(r.candles) - skip
    first = results[0]
    return BacktestResult(
        strategy=first.strategy,
        cheating=first.cheating,
        candles=pd.concat(frames, ignore_index=True),
        equity=np.concatenate(equity),
        position=np.concatenate(position),
        cash=np.concatenate(cash),
        actions=np.concatenate([r.actions for r in results]),
        fills=fills,
        fill_index=np.concatenate(fill_index),
        params=first.params,
    )


def table_rows(quote: str | None) -> list[tuple[str, str, str]]:
    """``TABLE`` with the money rows labelled in the run's quote currency (``Fees paid (BTC)``)."""
    unit = f" ({quote})" if quote else ""
    return [(k, label + unit if kind == "money" else label, kind) for k, label, kind in TABLE]


def _table(columns: Sequence[tuple[str, dict]], quote: str | None = None) -> str:
    head = "| metric | " + " | ".join(name for name, _ in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [
        f"| {label} | " + " | ".join(fmt(m.get(key), kind) for _, m in columns) + " |"
        for key, label, kind in table_rows(quote)
    ]
    return "\n".join([head, rule, *rows])


def _skill_lines(m: dict) -> list[str]:
    if m.get("skill_p_value") is None:
        return ["Skill test: not run (no fill model recorded with this backtest)."]
    return [
        f"Skill test: p-value **{m['skill_p_value']:.4f}**, percentile **{m['skill_percentile']:.1f}** "
        f"against {m['skill_sims']:,} random policies with the same round trips and time in the "
        f"market, same costs (seed {m['skill_seed']}). Below 0.05 the timing beats chance; a "
        "policy that only sits in the market longer than its rivals does not pass it.",
    ]


def _dsr_lines(d: dict | None) -> list[str]:
    if not d or d.get("dsr") is None:
        return ["Deflated Sharpe ratio: not defined (fewer than 3 returns or flat equity)."]
    return [
        f"Probabilistic Sharpe ratio P(SR > 0): **{d['psr']:.3f}**; deflated Sharpe ratio for "
        f"{d['trials']} trial(s): **{d['dsr']:.3f}** (benchmark per-candle SR {d['sr_benchmark']:.4f}, "
        f"per-candle SR {d['sharpe_per_period']:.4f}, skew {d['skew']:.2f}, kurtosis {d['kurtosis']:.2f}).",
        "The DSR is the probability that the true Sharpe ratio is above what the best of that many "
        "skill-less trials would show by luck (Bailey & Lopez de Prado 2014); above 0.95 is the usual bar.",
    ]


def write_report(
    out: Path,
    metrics: dict,
    result: BacktestResult,
    baseline: BacktestResult,
    params: dict,
    folds: Sequence[dict] | None = None,
    fold_starts: Sequence[pd.Timestamp] = (),
    decisions: pd.DataFrame | None = None,
) -> list[Path]:
    """Write the six files into ``out`` (created); returns their paths."""
    from chartrl.backtest.plots import plot_equity, plot_trades
    from chartrl.backtest.report_html import write_html

    out.mkdir(parents=True, exist_ok=True)
    name = result.strategy + (" (CHEATING upper bound)" if result.cheating else "")
    paths = [
        out / "metrics.json",
        out / "decisions.csv",
        out / "equity.png",
        out / "trades.png",
        out / "report.md",
        out / "report.html",
    ]
    paths[0].write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    frame = decisions if decisions is not None else result.decisions_frame()
    frame.to_csv(paths[1], index=False, date_format="%Y-%m-%dT%H:%M:%SZ", float_format="%.10g")
    ts = result.candles["timestamp"]
    plot_equity(
        paths[2],
        [
            (name, ts, result.equity),
            ("buy and hold", baseline.candles["timestamp"], baseline.equity),
        ],
        f"{name}: equity vs buy and hold",
        boundaries=fold_starts,
    )
    plot_trades(paths[3], result, f"{name}: trades")
    paths[4].write_text(_markdown(metrics, name, result, params, folds))
    columns = [(name, metrics), ("buy and hold", metrics["baselines"]["buyhold"])]
    write_html(
        paths[5],
        f"Backtest: {name}",
        [
            (label, [fmt(m.get(key), kind) for _, m in columns])
            for key, label, kind in table_rows(metrics.get("quote_currency"))
        ],
        [c for c, _ in columns],
        result,
        baseline,
        ([CHEATING_NOTE] if result.cheating else [])
        + [x.lstrip("> ").replace("**", "") for x in transfer_lines(metrics) if x],
    )
    return paths


def _markdown(
    metrics: dict, name: str, result: BacktestResult, params: dict, folds: Sequence[dict] | None
) -> str:
    lines = [f"# Backtest: {name}", ""]
    if result.cheating:
        lines += [f"> **{CHEATING_NOTE}**", ""]
    if metrics.get("model_trained_on_period") or any(
        f.get("model_trained_on_test") for f in folds or []
    ):
        lines += [
            "> **In-sample:** the model was trained on candles of this period; these figures flatter it.",
            "",
        ]
    lines += transfer_lines(metrics)
    quote = metrics.get("quote_currency")
    lines += [
        f"{metrics.get('series_name') or ''} {metrics.get('start')} to {metrics.get('end')}, "
        f"{metrics.get('candles'):,} candles. Decisions at the close of each candle fill at the "
        "next candle's open, with fees and slippage."
        + (f" Equity, cash, fees and turnover are in {quote}." if quote else ""),
        "",
        "## Metrics",
        "",
        _table([(name, metrics), ("buy and hold", metrics["baselines"]["buyhold"])], quote),
        "",
        *_dsr_lines(metrics.get("deflated_sharpe")),
        "",
        *_skill_lines(metrics),
        "",
    ]
    if folds:
        lines += [
            "## Walk-forward folds (out of sample)",
            "",
            "| fold | train | test | return | buy and hold | Sharpe | max DD | trades |",
            "|---:|---|---|---:|---:|---:|---:|---:|",
        ]
        for f in folds:
            m, b = f["metrics"], f["baseline"]
            lines.append(
                f"| {f['fold']} | {f['train'][0][:10]} .. {f['train'][1][:10]} | {f['test'][0][:10]} .. {f['test'][1][:10]} "
                f"| {fmt(m['total_return'], 'pct')} | {fmt(b['total_return'], 'pct')} | {fmt(m['sharpe'], 'f2')} "
                f"| {fmt(m['max_drawdown'], 'pct')} | {m['trades']} |"
            )
        lines += ["", "The metrics above chain the test folds into one out-of-sample curve.", ""]
    lines += [
        "## Equity",
        "",
        "![equity vs buy and hold, drawdown underneath](equity.png)",
        "",
        "## Trades",
        "",
        "![entries (green) and exits (red) over the last traded period](trades.png)",
        "",
        "## Parameters",
        "",
        "| parameter | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in params.items()],
        "",
        "Files: `metrics.json` (all figures), `decisions.csv` (every decision, fill, position, cash, equity).",
        "",
    ]
    return "\n".join(lines)


def run_and_report(
    strategy: Any,
    candles: pd.DataFrame,
    spec: Any,
    rules: Any,
    start: Any,
    end: Any,
    out: Path,
    params: dict,
    *,
    timeframe: str,
    initial_cash: float,
    trials: int = 1,
    device: Any = "cpu",
    progress: bool = False,
    walk_forward: int | None = None,
    retrain: Any = None,
    model_meta: dict | None = None,
    threads: int | None = None,
    series: tuple[str, str, str] | None = None,
    curves: list | None = None,
) -> dict:
    """Run one backtest (or K walk-forward folds), write the report into ``out``, return the
    metrics. ``series`` (exchange, symbol, timeframe): the candles' series, which labels the
    report's units and, with a ``model_meta``, says whether this is a transfer. ``curves``: a list
    the run's (result, buy-and-hold result) is appended to (the transfer matrix draws them)."""
    from chartrl.backtest import walkforward as wf
    from chartrl.backtest.metrics import result_metrics
    from chartrl.timeframe import periods_per_year

    ppy = periods_per_year(timeframe)
    folds, fold_starts, decisions = None, [], None
    if walk_forward:
        run = wf.walk_forward(
            strategy,
            candles,
            spec,
            rules,
            walk_forward,
            start=start,
            end=end,
            retrain=retrain,
            initial_cash=initial_cash,
            periods_per_year=ppy,
            device=device,
            progress=progress,
            threads=threads,
        )
        result, baseline = chain_results(run.results), chain_results(run.baselines)
        metrics = {
            "strategy": result.strategy,
            "cheating": result.cheating,
            **result_metrics(result, ppy, trials),
        }
        metrics["baselines"] = {"buyhold": result_metrics(baseline, ppy)}
        trained = training_range(model_meta or {}, series)
        for f in run.folds:
            # A fixed model evaluated on candles it was trained on is in-sample: say so per fold.
            f["model_trained_on_test"] = bool(trained) and overlaps(trained, f["test"])
        metrics["walk_forward"] = {
            "folds": walk_forward,
            "retrain": retrain is not None,
            "per_fold": run.folds,
        }
        folds, fold_starts = run.folds, wf.fold_boundaries(run.results)
        decisions = result.decisions_frame()
        decisions.insert(
            0, "fold", np.repeat(np.arange(len(run.results)), [len(r.actions) for r in run.results])
        )
    else:
        metrics, result, baseline = wf.evaluate_runs(
            strategy,
            candles,
            spec,
            rules,
            start,
            end,
            initial_cash=initial_cash,
            periods_per_year=ppy,
            trials=trials,
            device=device,
            progress=progress,
            threads=threads,
        )
    if series is not None:
        metrics["series_name"], metrics["quote_currency"] = name_of(series), quote_of(series)
    if model_meta and series is not None:
        metrics.update(provenance(model_meta, series))
    if model_meta and training_range(model_meta, series):
        # A model scored on candles it learnt from is in-sample: the figures flatter it.
        metrics["model_trained_on_period"] = overlaps(
            training_range(model_meta, series), (metrics["start"], metrics["end"])
        )
    elif model_meta:
        metrics["model_trained_on_period"] = False  # a transfer: it never saw this series
    if result.cheating:
        metrics["note"] = CHEATING_NOTE
    metrics["parameters"] = params
    if curves is not None:
        curves.append((result, baseline))
    write_report(
        out,
        metrics,
        result,
        baseline,
        params,
        folds=folds,
        fold_starts=fold_starts,
        decisions=decisions,
    )
    return metrics
