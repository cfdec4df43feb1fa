"""When a nightly challenger replaces the champion: the rule, its statistics and its reason.

Both models trade the same held-out candles, so their per-candle returns are paired. The Sharpe
difference of two such series has a standard error that a few days cannot beat (14 days of hourly
Sharpe: about 5 annualised units), so the rule asks for all of:

1. a comparable challenger: it has a Sharpe (its equity moved) and at least
   ``daemon.min_eval_trades`` trades;
2. a Sharpe above the champion's by more than ``promote_margin + promote_se_multiple x SE``, SE
   being the standard error of the Sharpe difference. A champion that is not comparable stands at
   Sharpe 0, what doing nothing earns, and SE is then that of the challenger's Sharpe alone;
3. skill: the challenger's skill test p-value (its return against random placements of its own
   round trips, chartrl.backtest.skill) at most ``promote_skill_p``. A model that only sits in the
   market through a rising window must not win on the drift.

SE: a circular block bootstrap of the paired returns (blocks of a day of candles, so the
autocorrelation within a day survives; the same resampled candles for both models, so the pairing
does), Sharpe annualised as the backtest annualises it; SE = the sample std of the resampled
differences. A resample in which a model's returns have no variance gives that model Sharpe 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

RESAMPLES = 1000
SEED = 0


def score(metrics: dict[str, Any]) -> float | None:
    """The comparison score: the Sharpe ratio; None for a run without variance (it never traded)."""
    value = metrics.get("sharpe")
    return None if value is None else float(value)


def incomparable(metrics: dict[str, Any], min_trades: int) -> str | None:
    """Why a held-out run's Sharpe cannot be compared, or None when it can."""
    if score(metrics) is None:
        return "no Sharpe (its equity never moved)"
    # A position still open at the end is a trade too: buying once and holding is a decision.
    trades = int(metrics.get("trades") or 0) + int(bool(metrics.get("open_position_at_end")))
    if trades < min_trades:
        return f"{trades} trade(s), fewer than daemon.min_eval_trades = {min_trades}"
    return None


def _sharpe_rows(r: np.ndarray, periods_per_year: float) -> np.ndarray:
    sd = r.std(axis=-1, ddof=1)
    mean = r.mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), 0.0)
    return s * math.sqrt(periods_per_year)


def sharpe_difference_se(
    champion: np.ndarray,
    challenger: np.ndarray,
    periods_per_year: float,
    block: int,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> float | None:
    """Standard error of Sharpe(challenger) - Sharpe(champion) of two paired per-candle return
    series, by circular block bootstrap (see the module docstring); None for under 2 returns."""
    a, b = np.asarray(champion, np.float64), np.asarray(challenger, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired returns differ in length: {len(a)} and {len(b)}")
    n = len(a)
    if n < 2:
        return None
    block = max(1, min(int(block), n))
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(resamples, math.ceil(n / block)))
    idx = ((starts[:, :, None] + np.arange(block)) % n).reshape(resamples, -1)[:, :n]
    diff = _sharpe_rows(b[idx], periods_per_year) - _sharpe_rows(a[idx], periods_per_year)
    return float(np.std(diff, ddof=1))


def decide(
    champion: dict[str, Any],
    challenger: dict[str, Any],
    margin: float,
    min_trades: int,
    *,
    se: float | None,
    se_multiple: float = 1.0,
    skill_p: float = 0.05,
) -> tuple[bool, str]:
    """Whether to promote the challenger, and why, from both held-out metrics and the SE of their
    Sharpe difference (``sharpe_difference_se``; against a champion that is not comparable, the
    SE of the challenger's Sharpe)."""
    why = incomparable(challenger, min_trades)
    if why:
        return False, f"challenger not comparable: {why}"
    champ_why = incomparable(champion, min_trades)
    ref = 0.0 if champ_why else float(score(champion))  # type: ignore[arg-type]
    lead = f"champion not comparable: {champ_why}; " if champ_why else ""
    against = "doing nothing (Sharpe 0)" if champ_why else "the champion's"
    if se is None or not math.isfinite(se):
        return False, f"{lead}no standard error of the Sharpe difference (too few returns)"
    diff = float(score(challenger)) - ref  # type: ignore[arg-type]
    need = margin + se_multiple * se
    rule = (
        f"daemon.promote_margin + daemon.promote_se_multiple x SE = {margin:g} + "
        f"{se_multiple:g} x {se:.3f}"
    )
    sharpe_ok = diff > need
    sharpe_text = (
        f"challenger's Sharpe {'beats' if diff > 0 else 'trails'} {against} by {abs(diff):.3f}, "
        f"{'more' if sharpe_ok else 'not more'} than {rule} = {need:.3f}"
    )
    p = challenger.get("skill_p_value")
    skill_ok = p is not None and float(p) <= skill_p
    skill_text = (
        "no skill test"
        if p is None
        else f"skill test p = {float(p):.3f} {'<=' if skill_ok else '>'} "
        f"daemon.promote_skill_p = {skill_p:g}"
    )
    if sharpe_ok and skill_ok:
        return True, f"{lead}{sharpe_text}; {skill_text}"
    checks = ((sharpe_ok, sharpe_text), (skill_ok, skill_text))
    failed = "; ".join(t for ok, t in checks if not ok)
    passed = "; ".join(t for ok, t in checks if ok)
    return False, lead + failed + (f" (met: {passed})" if passed else "")
