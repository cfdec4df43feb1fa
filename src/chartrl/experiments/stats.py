"""The statistics of a sweep directory: per strategy and configuration across seeds and folds,
paired differences against a reference, buy-and-hold, skill tests, DSR and PBO.

Inputs are the files ``chartrl sweep`` writes (docs/experiments.md): ``results.csv`` (one row per
configuration x seed x fold) and ``trials/<trial_id>/test_equity.csv``. Conventions:

- intervals: mean, sample std (ddof=1) and percentile bootstrap 95 % interval of the mean,
  resampling the finished runs (seed x fold) with replacement (``chartrl.train.seedstats``);
- a failed run has no metrics: it is counted (``trial_counts``), never silently left out;
- a run that never traded (no turnover on the test range) counts with return 0 and Sharpe 0,
  what doing nothing earns, and is flagged;
- the DSR's number of trials N is the number of distinct configurations tried (``config_id``),
  whatever their runs' status: a configuration whose every run failed was still tried.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chartrl.backtest.metrics import deflated_sharpe, period_returns
from chartrl.errors import DataError
from chartrl.experiments import pbo
from chartrl.logs import redact
from chartrl.train import seedstats
from chartrl.train.curves import never_traded

METRICS = ("total_return", "sharpe", "max_drawdown", "trades_per_week", "exposure")
"""The test metrics summarised per strategy and configuration."""
PAIRED = ("total_return", "sharpe", "trades_per_week", "exposure")
REQUIRED = ("trial_id", "strategy", "config_id", "seed", "fold", "status", "error")
NUMERIC = ("seed", "fold", "attempts", "chosen_epoch", "chosen_updates", "seconds")
ALPHA = 0.05


def load_results(out_dir: Path) -> pd.DataFrame:
    """``out_dir/results.csv`` with numbers parsed, the never-trading runs flagged
    (``never_traded``) and their missing return / Sharpe set to 0."""
    path = Path(out_dir) / "results.csv"
    if not path.is_file():
        raise DataError(f"no results.csv in {out_dir}: run `chartrl sweep --out {out_dir}` first")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from e
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; rerun the sweep")
    bad = df.index[~df["status"].isin(["done", "failed"])]
    if len(bad):
        raise DataError(
            f"{path}: row(s) {', '.join(str(i + 2) for i in bad[:5])} have status "
            f"{df['status'].iloc[bad[0]]!r}, expected done or failed"
        )
    dup = df["trial_id"][df["trial_id"].duplicated()]
    if len(dup):
        raise DataError(
            f"{path}: trial_id {dup.iloc[0]!r} appears more than once; one row per trial, "
            "rerun `chartrl sweep --resume` to rewrite it"
        )
    raw = df.copy()
    metric_cols = [c for c in df.columns if c.startswith(("val_", "test_"))]
    metric_cols = [c for c in metric_cols if not c.endswith(("_from", "_until"))]
    for c in (*NUMERIC, *metric_cols):
        if c in df.columns:
            num = pd.to_numeric(df[c], errors="coerce")
            bad = df.index[num.isna() & (df[c].str.strip() != "")]
            if len(bad):
                raise DataError(
                    f"{path}: row {int(bad[0]) + 2} column {c} is {df[c].iloc[bad[0]]!r}, "
                    "not a number; fix or rerun that trial"
                )
            df[c] = num
    for c in ("seed", "fold"):
        if df[c].isna().any():
            row = int(df.index[df[c].isna()][0]) + 2
            raise DataError(f"{path}: row {row} has no integer {c}")
        df[c] = df[c].astype(int)
    done = df["status"] == "done"
    flags = pd.Series([never_traded(r, "test") for r in raw.to_dict("records")], index=df.index)
    df["never_traded"] = done & flags.astype(bool)
    for c in ("test_total_return", "test_sharpe"):
        if c in df.columns:
            df.loc[df["never_traded"] & df[c].isna(), c] = 0.0
    return df


def trial_counts(df: pd.DataFrame) -> dict[str, Any]:
    """Runs, finished, failed, attempts, configurations (and those whose every run failed), the
    DSR's N, never-trading runs, per strategy, and each failure's first error line."""
    failed = df[df["status"] == "failed"]
    ok_configs = set(df.loc[df["status"] == "done", "config_id"])
    configs = sorted(set(df["config_id"]))
    per = {
        s: {
            "runs": len(g),
            "done": int((g["status"] == "done").sum()),
            "failed": int((g["status"] == "failed").sum()),
            "never_traded": int(g["never_traded"].sum()),
            "configurations": g["config_id"].nunique(),
        }
        for s, g in df.groupby("strategy", sort=False)
    }
    attempts = df["attempts"].fillna(1).sum() if "attempts" in df.columns else len(df)
    return {
        "runs": len(df),
        "done": len(df) - len(failed),
        "failed": len(failed),
        "attempts": int(attempts),
        "configurations": len(configs),
        "configurations_all_failed": sorted(set(configs) - ok_configs),
        "dsr_trials": len(configs),
        "never_traded": int(df["never_traded"].sum()),
        "per_strategy": per,
        "failures": [(r.trial_id, _first_line(r.error)) for r in failed.itertuples()],
    }


def _first_line(error: Any, limit: int = 160) -> str:
    """An error's first line for the report, secrets masked as in the logs (a ccxt message can
    carry a signed URL)."""
    line = (str(error).strip().splitlines() or ["(no error text)"])[0]
    line = redact(None, "", {"error": line})["error"]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _describe(values: pd.Series) -> dict[str, Any]:
    known = [float(v) for v in values if math.isfinite(v)]
    return {**seedstats.describe(known), "missing": len(values) - len(known)}


def summarize(df: pd.DataFrame, by: str = "strategy") -> dict[str, dict[str, Any]]:
    """Per ``by`` value (``strategy`` or ``config_id``), over its finished runs: every test
    metric's ``seedstats.describe`` (plus ``missing``), runs done / failed, and the (seed, fold)
    of runs that never traded."""
    out: dict[str, dict[str, Any]] = {}
    for key, g in df.groupby(by, sort=False):
        d = g[g["status"] == "done"]
        row: dict[str, Any] = {
            "strategy": g["strategy"].iloc[0],
            "done": len(d),
            "failed": len(g) - len(d),
            "never_traded": [(int(r.seed), int(r.fold)) for r in d[d["never_traded"]].itertuples()],
        }
        for m in METRICS:
            col = f"test_{m}"
            row[m] = _describe(d[col] if col in d.columns else pd.Series([np.nan] * len(d)))
        out[str(key)] = row
    return out


def _by_seed_fold(df: pd.DataFrame, by: str, key: str, metric: str) -> pd.Series:
    """The finished runs' test ``metric`` at each (seed, fold) of the ``by`` (strategy or
    config_id) value ``key``, averaged over its configurations (a searched strategy has
    several)."""
    d = df[(df[by] == key) & (df["status"] == "done")]
    return d.groupby(["seed", "fold"])[f"test_{metric}"].mean().dropna()


def paired_differences(df: pd.DataFrame, reference: str = "cnn") -> dict[str, dict[str, Any]]:
    """Per strategy other than ``reference``: differences minus the reference at the same
    (seed, fold), same data and budget, over the pairs where both finished. A configuration as
    the reference (``cnn|frame_stack=1``) pairs every other configuration with it instead."""
    by = "config_id" if reference in set(df["config_id"]) else "strategy"
    if reference not in set(df[by]):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name in df[by].unique():
        if name == reference:
            continue
        row: dict[str, Any] = {}
        for m in PAIRED:
            a, b = _by_seed_fold(df, by, name, m), _by_seed_fold(df, by, reference, m)
            common = a.index.intersection(b.index)
            row[m] = {
                **seedstats.paired(a[common].tolist(), b[common].tolist()),
                "pairs": len(common),
            }
        out[str(name)] = row
    return out


def beat_buy_hold(df: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per strategy: how many finished runs, and how many folds (the runs' mean at that fold),
    ended above buy-and-hold over the same test range, both after fees."""
    out: dict[str, dict[str, int]] = {}
    d = df[df["status"] == "done"].dropna(subset=["test_total_return", "test_buy_hold_return"])
    for name, g in d.groupby("strategy", sort=False):
        folds = g.groupby("fold")[["test_total_return", "test_buy_hold_return"]].mean()
        out[str(name)] = {
            "runs": len(g),
            "runs_beat": int((g["test_total_return"] > g["test_buy_hold_return"]).sum()),
            "folds": len(folds),
            "folds_beat": int((folds["test_total_return"] > folds["test_buy_hold_return"]).sum()),
        }
    return out


def skill_summary(df: pd.DataFrame) -> dict[str, Any]:
    """Skill-test p-values of the finished runs' test ranges: per strategy the count, median and
    share below 0.05; overall how many tests ran, how many below 0.05 luck alone would give, and
    how many pass Bonferroni (p < 0.05 / tests)."""
    d = df[df["status"] == "done"].dropna(subset=["test_skill_p_value"])
    per = {
        str(name): {
            "tests": len(g),
            "median": float(g["test_skill_p_value"].median()),
            "below": int((g["test_skill_p_value"] < ALPHA).sum()),
        }
        for name, g in d.groupby("strategy", sort=False)
    }
    n = len(d)
    p = d["test_skill_p_value"]
    return {
        "per_strategy": per,
        "tests": n,
        "below": int((p < ALPHA).sum()),
        "expected_by_chance": ALPHA * n,
        "bonferroni": int((p < ALPHA / n).sum()) if n else 0,
        "smallest": float(p.min()) if n else None,
    }


def _equity_returns(path: Path) -> pd.Series:
    """Per-candle simple returns of a test_equity.csv, indexed by the candle they end at."""
    try:
        e = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from err
    if not {"timestamp", "equity"} <= set(e.columns) or len(e) < 2:
        raise DataError(f"{path}: needs columns timestamp,equity and at least 2 rows")
    eq = pd.to_numeric(e["equity"], errors="coerce").to_numpy(np.float64)
    if not np.all(np.isfinite(eq)) or np.any(eq <= 0):
        raise DataError(f"{path}: equity has missing, zero or negative values")
    ts = e["timestamp"].iloc[1:]
    try:
        # ISO 8601 text as the sweep writes it; plain numbers are epoch milliseconds.
        numeric = pd.api.types.is_numeric_dtype(ts)
        index = pd.to_datetime(
            ts, utc=True, **({"unit": "ms"} if numeric else {"format": "ISO8601"})
        )
    except (ValueError, TypeError) as err:
        raise DataError(
            f"{path}: unreadable timestamp; expected ISO 8601 such as 2024-01-01T00:00:00+00:00"
        ) from err
    return pd.Series(period_returns(eq), index=index)


def config_returns(out_dir: Path, df: pd.DataFrame) -> tuple[dict[str, pd.Series], list[str]]:
    """Per configuration, its per-candle test returns: at each fold the mean over its finished
    seeds (one equal-weighted book of the seeds), the folds one after another. Also the
    trial ids of finished runs without a readable test_equity.csv (reported, not hidden)."""
    missing: list[str] = []
    per: dict[str, dict[int, list[pd.Series]]] = {}
    for r in df[df["status"] == "done"].itertuples():
        path = Path(out_dir) / "trials" / str(r.trial_id) / "test_equity.csv"
        if not path.is_file():
            missing.append(str(r.trial_id))
            continue
        per.setdefault(str(r.config_id), {}).setdefault(int(r.fold), []).append(
            _equity_returns(path)
        )
    out = {}
    for cid, folds in per.items():
        parts = []
        for f in sorted(folds):
            s = pd.concat(folds[f], axis=1).mean(axis=1)
            s.index = pd.MultiIndex.from_arrays(
                [[f] * len(s), s.index], names=["fold", "timestamp"]
            )
            parts.append(s)
        out[cid] = pd.concat(parts)
    return out, missing


def per_period_sharpe(r: np.ndarray) -> float:
    """mean / sample std; 0 without spread (a flat, never-trading run)."""
    sd = float(np.std(r, ddof=1)) if len(r) > 1 else 0.0
    return float(np.mean(r)) / sd if sd > 0 else 0.0


def deflated_best(returns: dict[str, pd.Series], trials: int) -> dict[str, Any] | None:
    """DSR of the configuration with the highest per-period Sharpe of its test returns, picked
    among ``trials`` (``backtest.metrics.deflated_sharpe``); the trials' Sharpe spread is the
    sample std (ddof=1) of every configuration's per-period Sharpe (the estimate's own standard
    error when fewer than 2 have returns). None without any returns."""
    if not returns:
        return None
    sharpe = {c: per_period_sharpe(r.to_numpy(np.float64)) for c, r in sorted(returns.items())}
    best = max(sharpe, key=lambda c: sharpe[c])
    sr_std = float(np.std(list(sharpe.values()), ddof=1)) if len(sharpe) > 1 else None
    out = deflated_sharpe(returns[best].to_numpy(np.float64), trials=trials, sr_std=sr_std)
    ts = returns[best].index.get_level_values("timestamp")
    step = pd.Series(ts).diff().dt.total_seconds().median() if len(ts) > 1 else math.nan
    # 365 days a year, as timeframe.periods_per_year counts them (crypto trades every day).
    per_year = 365 * 86_400 / step if step and step > 0 else math.nan
    return {
        **out,
        "config_id": best,
        "periods": len(returns[best]),
        "configs_with_returns": len(sharpe),
        "sr_std": sr_std,
        "sharpe_annualised": (
            None
            if out["sharpe_per_period"] is None or not math.isfinite(per_year)
            else float(out["sharpe_per_period"] * per_year**0.5)
        ),
    }


def _pbo_or_reason(fn, *args) -> dict[str, Any]:
    try:
        return {"result": fn(*args), "reason": None}
    except DataError as e:
        return {"result": None, "reason": str(e)}


def returns_pbo(returns: dict[str, pd.Series]) -> dict[str, Any]:
    """PBO on the per-period matrix of the configurations that have every fold's test returns
    (the others are named in ``left_out``)."""
    if not returns:
        return {"result": None, "reason": "no finished run has test returns", "left_out": []}
    table = pd.concat(returns, axis=1).sort_index()  # outer join on (fold, candle)
    complete = table.notna().all()
    full = [str(c) for c in table.columns[complete]]
    left = sorted(str(c) for c in table.columns[~complete])
    if len(full) < 2:
        return {
            "result": None,
            "reason": f"{len(full)} configuration(s) with returns on every fold; PBO needs 2",
            "left_out": left,
        }
    m = table[full].to_numpy(np.float64)
    return {**_pbo_or_reason(pbo.pbo_returns, m), "left_out": left}


def folds_pbo(df: pd.DataFrame, metric: str = "sharpe") -> dict[str, Any]:
    """PBO on the folds x configurations matrix of the test ``metric`` (mean over seeds); only
    configurations with a finished run on every fold (the others in ``left_out``)."""
    d = df[df["status"] == "done"]
    if d.empty:
        return {"result": None, "reason": "no finished run", "left_out": []}
    m = d.pivot_table(index="fold", columns="config_id", values=f"test_{metric}", aggfunc="mean")
    folds = sorted(df["fold"].unique())
    m = m.reindex(folds)
    left = sorted(set(df["config_id"]) - set(m.columns[m.notna().all()]))
    m = m.loc[:, m.notna().all()]
    return {**_pbo_or_reason(pbo.pbo_folds, m.to_numpy(np.float64)), "left_out": left}


def sweep_stats(out_dir: Path, reference: str = "cnn") -> dict[str, Any]:
    """Everything the report shows, from the files in ``out_dir``."""
    df = load_results(out_dir)
    counts = trial_counts(df)
    returns, equity_missing = config_returns(out_dir, df)
    return {
        "results": df,
        "counts": counts,
        "strategies": summarize(df, "strategy"),
        "configs": summarize(df, "config_id"),
        "reference": reference,
        "paired": paired_differences(df, reference),
        "buy_hold": beat_buy_hold(df),
        "skill": skill_summary(df),
        "dsr": deflated_best(returns, counts["dsr_trials"]),
        # The conservative reading: every run a trial, seeds and folds included.
        "dsr_every_run": deflated_best(returns, counts["runs"]),
        "pbo_returns": returns_pbo(returns),
        "pbo_folds": folds_pbo(df),
        "equity_missing": equity_missing,
    }
