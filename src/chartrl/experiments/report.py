"""``DIR/report.md`` of a sweep, with its PNGs: what the runs show, stated plainly.

``chartrl sweep`` calls :func:`write_report` when every trial has run (and after ``--resume``);
it reads the files in DIR itself, so it can be rerun on a finished sweep directory.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chartrl.atomic import atomic_write
from chartrl.experiments import figures, pbo, stats
from chartrl.experiments.plan import read_training_series
from chartrl.logs import get_logger
from chartrl.train import seedstats
from chartrl.train.curves import imitation_losses, plot_curves, plot_imitation

log = get_logger(__name__)


def fmt(d: dict[str, Any], scale: float = 1.0, digits: int = 2) -> str:
    """``seedstats.fmt``, plus how many finished runs lacked the figure (never silently)."""
    text = seedstats.fmt(d, scale, digits)
    return text + (f" ({d['missing']} missing)" if d.get("missing") else "")


def _histories(out_dir: Path, df, by: str) -> dict[str, list[list[dict[str, Any]]]]:
    """Per ``by`` value (strategy or config_id), the history.csv rows of its finished trials
    (failed ones are counted in the Trials section, not drawn)."""
    out: dict[str, list[list[dict[str, Any]]]] = {}
    for r in df[df["status"] == "done"].itertuples():
        path = out_dir / "trials" / str(r.trial_id) / "history.csv"
        if path.is_file():
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
            if rows:
                out.setdefault(str(getattr(r, by)), []).append(rows)
    return out


def _imitation(histories: dict[str, list[list[dict[str, Any]]]], out_dir: Path) -> list[str]:
    """The imitation stage per group: the three-label supervised learning the article's CNN
    did, whose loss it found to jump around; its last epoch's loss and how often a loss rose."""
    rows = []
    for name, runs in histories.items():
        losses = [[v for _, v in sorted(imitation_losses(h).items())] for h in runs]
        losses = [x for x in losses if x]
        if not losses:
            continue
        rises = sum(b > a for x in losses for a, b in zip(x, x[1:], strict=False))
        steps = sum(len(x) - 1 for x in losses)
        last = seedstats.fmt(seedstats.describe([x[-1] for x in losses]), 1, 4)
        change = seedstats.fmt(seedstats.describe([x[-1] - x[0] for x in losses]), 1, 4)
        rows.append(
            f"| {name.replace('|', '/')} | {len(losses)} | {last} | {change} | {rises} of {steps} |"
        )
    if not rows:
        return []
    plot_imitation(histories, out_dir / "imitation.png", over="seeds and folds")
    return [
        "### The imitation stage",
        "",
        "Training loss (weighted cross-entropy against the oracle's hold/buy/sell labels) of the "
        "finished runs: the last imitation epoch's, its change from the first epoch (mean ± std "
        "[bootstrap 95 % interval] over seeds and folds), and how many epoch-to-epoch steps "
        "raised it. A training loss: it says how each network fits the labels, not how it "
        "trades.",
        "",
        "| | runs | last epoch's loss | last - first | epochs where it rose |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "![imitation](imitation.png)",
        "",
    ]


def _folds_section(out_dir: Path) -> list[str]:
    """The fold layout of DIR/sweep.json: a table of its ranges and ``folds.png``."""
    from chartrl.experiments.plan import CANDLES_FILE, load_candles, read_folds

    lines = ["## Walk-forward folds", ""]
    folds = read_folds(out_dir)
    if not folds:
        return lines + ["DIR holds no sweep.json: the fold layout is not drawn."]
    ts = None
    if (out_dir / CANDLES_FILE).is_file():
        ts = load_candles(out_dir, ["timestamp"])["timestamp"]
    n = len(ts) if ts is not None else folds[-1].test[1] + 1

    def span(r: tuple[int, int]) -> str:
        where = (
            f"{ts.iloc[r[0]]:%Y-%m-%d %H:%M} .. {ts.iloc[r[1]]:%Y-%m-%d %H:%M}"
            if ts is not None
            else f"{r[0]}..{r[1]}"
        )
        return f"{where} ({r[1] - r[0] + 1:,})"

    figures.plot_folds(folds, n, out_dir / "folds.png", ts)
    lines += [
        "Each fold trains from the first candle, lets its validation range choose the checkpoint "
        "and is judged once on its test range; the hatched purge gaps (one chart window plus "
        "the oracle window) keep every range's charts and labels off the next "
        "(docs/experiments.md). Ranges with their candle counts:",
        "",
        "| fold | training | validation | test |",
        "|---|---|---|---|",
        *(f"| {f.index} | {span(f.train)} | {span(f.val)} | {span(f.test)} |" for f in folds),
        "",
        "![walk-forward folds](folds.png)",
    ]
    return lines


def _trials(c: dict[str, Any], equity_missing: list[str]) -> list[str]:
    lines = [
        "## Trials",
        "",
        f"{c['runs']} runs (configuration x seed x fold) of {c['configurations']} "
        f"configuration(s): {c['done']} finished, {c['failed']} failed; {c['attempts']} attempts "
        "in all, retries included.",
    ]
    if c["never_traded"]:
        lines.append(
            f"{c['never_traded']} finished run(s) never traded on the test range: they count with "
            "return 0 and Sharpe 0 (what doing nothing earns) and are flagged in the tables."
        )
    if c["configurations_all_failed"]:
        names = ", ".join(f"`{x}`" for x in c["configurations_all_failed"])
        lines.append(f"Configurations with no finished run (still counted as tried): {names}.")
    if equity_missing:
        lines.append(
            f"{len(equity_missing)} finished run(s) have no test_equity.csv and are left out of "
            f"the DSR and the per-period PBO: {', '.join(equity_missing)}."
        )
    lines += [
        "",
        "| strategy | configurations | runs | finished | failed | never traded |",
        "|---|---|---|---|---|---|",
    ]
    for s, p in c["per_strategy"].items():
        lines.append(
            f"| {s} | {p['configurations']} | {p['runs']} | {p['done']} | {p['failed']} "
            f"| {p['never_traded']} |"
        )
    if c["failures"]:
        lines += ["", "| failed trial | error (first line) |", "|---|---|"]
        lines += [f"| {t} | {e.replace('|', '/')} |" for t, e in c["failures"]]
    return lines


def _metric_table(summary: dict[str, dict[str, Any]], label: str) -> list[str]:
    lines = [
        f"| {label} | runs | failed | test return % | test Sharpe | max drawdown % "
        "| round trips / week | exposure % | never traded (seed, fold) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in summary.items():
        flag = ", ".join(f"({s}, {f})" for s, f in r["never_traded"]) or "-"
        lines.append(
            f"| {name.replace('|', '/')} | {r['done']} | {r['failed']} "
            f"| {fmt(r['total_return'], 100)} | {fmt(r['sharpe'])} "
            f"| {fmt(r['max_drawdown'], 100)} | {fmt(r['trades_per_week'])} "
            f"| {fmt(r['exposure'], 100, 1)} | {flag} |"
        )
    return lines


def _paired(paired: dict[str, dict[str, Any]], reference: str) -> list[str]:
    """``paired``: the strategies with at least one (seed, fold) pair."""
    lines = [f"## Paired differences against `{reference}`", ""]
    if not paired:
        return lines + [
            f"No (seed, fold) where `{reference}` and another strategy both finished: "
            "no paired differences."
        ]
    lines += [
        f"Each strategy minus `{reference}` at the same (seed, fold): same data, same budget "
        "(a searched strategy is averaged over its configurations first). Mean ± std "
        "[95 % interval] of the differences; pairs counts the (seed, fold) where both finished.",
        "",
        "| strategy | pairs | Δ test return % | Δ test Sharpe | Δ round trips / week "
        "| Δ exposure % |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in paired.items():
        lines.append(
            f"| {name.replace('|', '/')} | {d['total_return']['pairs']} "
            f"| {fmt(d['total_return'], 100)} "
            f"| {fmt(d['sharpe'])} | {fmt(d['trades_per_week'])} | {fmt(d['exposure'], 100, 1)} |"
        )
    lines.append("")
    for name, d in paired.items():
        ci = d["total_return"]["ci95"]
        if ci is None:
            verdict = "too few pairs for an interval"
        elif ci[0] > 0:
            verdict = "its return is higher, the whole interval above 0"
        elif ci[1] < 0:
            verdict = "its return is lower, the whole interval below 0"
        else:
            verdict = "the interval of the return difference spans 0: no difference shown"
        lines.append(f"- {name} vs {reference}: {verdict}.")
    return lines + ["", "![paired differences](paired.png)"]


def _buy_hold(bh: dict[str, dict[str, int]]) -> list[str]:
    lines = ["## Beating buy and hold", ""]
    if not bh:
        return lines + ["No finished run has both a test return and a buy-and-hold return."]
    lines.append(
        "A run beats buy and hold when its test return, after fees, is above holding over the "
        "same test range; a fold, when the mean of the strategy's runs on it is."
    )
    lines.append("")
    for name, b in bh.items():
        lines.append(
            f"- {name}: {b['runs_beat']} of {b['runs']} runs and {b['folds_beat']} of "
            f"{b['folds']} folds beat buy and hold."
        )
    return lines


def _skill(sk: dict[str, Any]) -> list[str]:
    lines = ["## Skill p-values", ""]
    if not sk["tests"]:
        return lines + ["No finished run has a test skill p-value."]
    lines += [
        "Each run's test return against random placements of its own round trips "
        "(docs/backtest.md); small = timing better than chance.",
        "",
        "| strategy | tests | median p | p < 0.05 |",
        "|---|---|---|---|",
    ]
    for name, p in sk["per_strategy"].items():
        share = p["below"] / p["tests"]
        lines.append(f"| {name} | {p['tests']} | {p['median']:.3f} | {p['below']} ({share:.0%}) |")
    lines += [
        "",
        f"{sk['tests']} tests were run; with no skill anywhere about {sk['expected_by_chance']:.1f}"
        f" of them would fall below 0.05 by chance, {sk['below']} did. Bonferroni over all of "
        f"them (p < {stats.ALPHA / sk['tests']:.2g}) passes {sk['bonferroni']} "
        f"(smallest p {sk['smallest']:.3g}).",
    ]
    return lines


def _dsr(d: dict[str, Any] | None, every: dict[str, Any] | None, c: dict[str, Any]) -> list[str]:
    lines = ["## Deflated Sharpe ratio", ""]
    if d is None:
        return lines + ["No finished run has test returns: no DSR."]
    if d["dsr"] is None:
        return lines + [f"`{d['config_id']}`, the best configuration, has flat returns: no DSR."]
    ann = "" if d["sharpe_annualised"] is None else f", about {d['sharpe_annualised']:.2f} a year"
    lines += [
        f"Best configuration by the per-period Sharpe of its test returns (mean over seeds at "
        f"each candle, the folds one after another): `{d['config_id']}`, Sharpe "
        f"{d['sharpe_per_period']:.4f} per candle{ann}, over {d['periods']} candles.",
        "",
        f"- Trials N = {d['trials']}: every configuration tried, finished or failed "
        f"({c['configurations']} configurations; {c['failed']} failed run(s) of "
        f"{c['runs']}).",
        f"- Expected best Sharpe of {d['trials']} skill-less configurations: "
        f"{d['sr_benchmark']:.4f} per candle (spread of the configurations' Sharpe "
        + (
            "n/a: fewer than 2, the estimate's own error used"
            if d["sr_std"] is None
            else f"{d['sr_std']:.4f}"
        )
        + ").",
        f"- PSR (true Sharpe > 0) {d['psr']:.3f}; **DSR {d['dsr']:.3f}**: "
        + (
            "the best configuration's Sharpe is above what selection luck explains at 95 %."
            if d["dsr"] >= 0.95
            else "the best configuration's Sharpe is not distinguishable, at 95 %, from the "
            f"best of {d['trials']} configurations without skill."
        ),
    ]
    if every is not None and every["dsr"] is not None:
        lines.append(
            f"- Counting every run as a trial (N = {every['trials']}, seeds and folds included, "
            f"the conservative reading): DSR {every['dsr']:.3f}."
        )
    return lines


def _pbo_section(res_r: dict[str, Any], res_f: dict[str, Any]) -> tuple[list[str], dict]:
    lines = [
        "## Probability of backtest overfitting (CSCV)",
        "",
        "How often the configuration that wins one half of the test data is at or below the "
        "median configuration on the other half (Bailey, Borwein, Lopez de Prado & Zhu 2015). "
        "Near 0: the winner holds up; near 0.5 or above: choosing by these results is choosing "
        "noise.",
        "",
    ]
    shown: dict[str, pbo.PBOResult] = {}
    for label, res in (("per-candle Sharpe", res_r), ("fold-level test Sharpe", res_f)):
        if res["result"] is None:
            lines.append(f"- {label}: not computed: {res['reason']}.")
        else:
            r = res["result"]
            shown[label] = r
            lines.append(
                f"- {label}: {pbo.describe(r)}. The in-sample winner's out-of-sample Sharpe is "
                f"negative in {r.prob_oos_loss:.0%} of the splits."
                + (
                    f" Only {r.combinations} splits: a coarse estimate."
                    if r.combinations < 20
                    else ""
                )
            )
        if res["left_out"]:
            lines.append(
                f"  Left out, without a finished run on every fold: {len(res['left_out'])} "
                "configuration(s)."
            )
    if shown:
        lines += ["", "![PBO](pbo.png)"]
    return lines, shown


def write_report(out_dir: Path, *, reference: str = "cnn") -> Path:
    """Read DIR/results.csv and DIR/trials/*, write DIR/report.md and its PNGs; the path."""
    out_dir = Path(out_dir)
    s = stats.sweep_stats(out_dir, reference)
    df, c = s["results"], s["counts"]
    seeds = sorted(df["seed"].unique())
    folds = sorted(df["fold"].unique())
    head = [
        "# Sweep report",
        "",
        f"`{out_dir}`, written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Strategies: "
        f"{', '.join(s['strategies'])}; seeds {', '.join(map(str, seeds))}; "
        f"{len(folds)} walk-forward fold(s). All figures are on the test ranges, which neither "
        "training nor the checkpoint choice saw (the checkpoint is the best on validation).",
        "",
    ]
    named = read_training_series(out_dir)
    if named:
        head += [
            f"Trained on {len(named)} series (`--series`). Judged: `{named[0]}`, whose folds, "
            "validation and test ranges these are. Further training candles only, from each "
            "fold's training range by date: " + ", ".join(f"`{n}`" for n in named[1:]) + ".",
            "",
        ]
    has_metrics = any(v["done"] for v in s["strategies"].values())
    body = _trials(c, s["equity_missing"]) + [
        "",
        "## Test metrics per strategy",
        "",
        "Mean ± sample std (ddof=1) [percentile bootstrap 95 % interval of the mean, "
        f"{seedstats.RESAMPLES:,} resamples of the finished runs] across seeds and folds. "
        "Folds are different markets, so the spread holds the market's variation too.",
        "",
        *_metric_table(s["strategies"], "strategy"),
        "",
        "![test metrics](metrics.png)" if has_metrics else "No finished run: nothing to plot.",
        "",
    ]
    body = [*_folds_section(out_dir), "", *body]
    if len(s["configs"]) > len(s["strategies"]):
        body += ["### Per configuration", "", *_metric_table(s["configs"], "configuration"), ""]
    paired = {k: v for k, v in s["paired"].items() if v["total_return"]["pairs"]}
    body += _paired(paired, reference) + [""]
    body += _buy_hold(s["buy_hold"]) + [""] + _skill(s["skill"]) + [""]
    body += _dsr(s["dsr"], s["dsr_every_run"], c) + [""]
    pbo_lines, shown = _pbo_section(s["pbo_returns"], s["pbo_folds"])
    body += pbo_lines + ["", "## Learning curves", ""]
    by = "config_id" if len(s["configs"]) > len(s["strategies"]) else "strategy"
    histories = _histories(out_dir, df, by)
    if histories:
        plot_curves(histories, out_dir / "curves.png", over="seeds and folds", interpolate=True)
        body.append(
            "Validation figures over DQN gradient updates of the finished runs: the line is the "
            "mean over seeds and folds, the band their min..max. Folds train on ranges of "
            "different lengths, so their validations fall at different update counts: each run "
            "is interpolated linearly between its own validations, over the updates every run "
            "reached.\n\n![learning curves](curves.png)"
        )
        body += ["", *_imitation(histories, out_dir)]
    else:
        body.append("No history.csv of a finished run: no learning curves.")
    if has_metrics:
        figures.plot_metrics(s["strategies"], out_dir / "metrics.png")
    if paired:
        figures.plot_paired(paired, reference, out_dir / "paired.png")
    if shown:
        figures.plot_pbo(shown, out_dir / "pbo.png")
    path = out_dir / "report.md"
    text = "\n".join(head + body) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))
    log.info("sweep report written", path=str(path), runs=c["runs"], failed=c["failed"])
    return path
