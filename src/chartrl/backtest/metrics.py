"""Performance metrics of an equity curve and its fills, and the deflated Sharpe ratio.

Conventions (docs/backtest.md repeats them):
- the equity curve has one point per candle close, the first point being the starting cash at the
  close of the first decision candle; returns are simple per-candle returns of that curve;
- annualising uses ``periods_per_year(timeframe)`` (crypto trades 365 days a year), risk-free 0;
- a trade is a closed round trip (a buy and the sell that closes it); its profit is net of both
  fees and slippage. A position still open at the end is not a trade (``open_position_at_end``).

The deflated Sharpe ratio follows Bailey & Lopez de Prado (2014), "The Deflated Sharpe Ratio:
Correcting for Selection Bias, Backtest Overfitting and Non-Normality", J. Portfolio Management.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from chartrl.account.fills import Fill

EULER_GAMMA = 0.5772156649015329
_N = NormalDist()


def period_returns(equity: np.ndarray) -> np.ndarray:
    """Simple returns between consecutive equity points."""
    e = np.asarray(equity, dtype=np.float64)
    return e[1:] / e[:-1] - 1.0


def max_drawdown(equity: np.ndarray) -> float:
    """Largest fall from a running peak, as a positive fraction of that peak (0 if never below)."""
    e = np.asarray(equity, dtype=np.float64)
    if len(e) == 0:
        return 0.0
    peak = np.maximum.accumulate(e)
    return float(np.max(1.0 - e / peak))


def drawdown_series(equity: np.ndarray) -> np.ndarray:
    """Drawdown at each point, as a negative fraction (0 at a new peak), for plots."""
    e = np.asarray(equity, dtype=np.float64)
    return e / np.maximum.accumulate(e) - 1.0


def pair_fills(fills: Sequence[Fill]) -> list[tuple[int, int | None]]:
    """Positions in ``fills`` of each round trip's buy and sell (sell None: still open at the end).

    The fill model never buys while long, so a buy on an open position starts the next of several
    chained runs (walk-forward folds): the earlier run ended long, which is not a trade, exactly
    as that run's own metrics count it. Merging the two buys would invent a losing round trip.
    """
    out: list[tuple[int, int | None]] = []
    entry: int | None = None
    for k, f in enumerate(fills):
        if f.side == "buy":
            entry = k
        elif f.side == "sell" and entry is not None:
            out.append((entry, k))
            entry = None
    if entry is not None:
        out.append((entry, None))
    return out


def round_trips(fills: Sequence[Fill]) -> list[tuple[float, float]]:
    """(profit in quote, net return) of each closed round trip (``pair_fills``): sell proceeds
    after fee against the buy cost with fee."""
    out: list[tuple[float, float]] = []
    for b, s in pair_fills(fills):
        if s is None:
            continue
        cost = fills[b].notional + fills[b].fee
        proceeds = fills[s].notional - fills[s].fee
        out.append((proceeds - cost, proceeds / cost - 1.0))
    return out


def _moments(r: np.ndarray) -> tuple[float, float]:
    """(skewness, kurtosis) of ``r`` with population moments; kurtosis is 3 for a normal law."""
    d = r - r.mean()
    m2 = float(np.mean(d**2))
    if m2 <= 0:
        return 0.0, 3.0
    return float(np.mean(d**3) / m2**1.5), float(np.mean(d**4) / m2**2)


def sharpe_std_error(sr: float, n: int, skew: float, kurt: float) -> float:
    """Standard error of a per-period Sharpe estimate under non-normal returns (Mertens 2002)."""
    var = (1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr) / max(n - 1, 1)
    return math.sqrt(max(var, 1e-300))


def probabilistic_sharpe(sr: float, sr_benchmark: float, n: int, skew: float, kurt: float) -> float:
    """P(true Sharpe > benchmark) given the per-period estimate ``sr`` over ``n`` returns."""
    return _N.cdf((sr - sr_benchmark) / sharpe_std_error(sr, n, skew, kurt))


def expected_max_sharpe(trials: int, sr_std: float) -> float:
    """Expected largest of ``trials`` per-period Sharpe ratios of skill-less strategies whose
    estimates spread with standard deviation ``sr_std`` (the DSR's benchmark SR0)."""
    if trials <= 1:
        return 0.0
    return sr_std * (
        (1.0 - EULER_GAMMA) * _N.inv_cdf(1.0 - 1.0 / trials)
        + EULER_GAMMA * _N.inv_cdf(1.0 - 1.0 / (trials * math.e))
    )


def deflated_sharpe(returns: np.ndarray, trials: int = 1, sr_std: float | None = None) -> dict:
    """Probabilistic and deflated Sharpe ratio of per-period ``returns``.

    ``trials`` is how many configurations were tried before this one was picked. ``sr_std`` is the
    standard deviation of their per-period Sharpe ratios; unknown (None), it is taken as the
    estimate's own standard error at zero skill, i.e. the spread the trials would show by luck.
    """
    r = np.asarray(returns, dtype=np.float64)
    n = len(r)
    if n < 3 or float(np.std(r)) == 0.0:
        return {
            "trials": trials,
            "sharpe_per_period": None,
            "psr": None,
            "dsr": None,
            "sr_benchmark": None,
            "skew": None,
            "kurtosis": None,
        }
    sr = float(r.mean() / r.std(ddof=1))
    skew, kurt = _moments(r)
    if sr_std is None:
        sr_std = sharpe_std_error(0.0, n, skew, kurt)
    sr0 = expected_max_sharpe(trials, sr_std)
    return {
        "trials": trials,
        "sharpe_per_period": sr,
        "psr": probabilistic_sharpe(sr, 0.0, n, skew, kurt),
        "dsr": probabilistic_sharpe(sr, sr0, n, skew, kurt),
        "sr_benchmark": sr0,
        "skew": skew,
        "kurtosis": kurt,
    }


def _finite(x: float) -> float | None:
    """JSON has no inf/NaN: undefined ratios are reported as null."""
    return float(x) if math.isfinite(x) else None


def compute_metrics(
    equity: np.ndarray,
    position: np.ndarray,
    fills: Sequence[Fill],
    periods_per_year: float,
    start: str | None = None,
    end: str | None = None,
) -> dict:
    """Every summary figure of one run; ``position`` is the base amount held at each equity point."""
    e = np.asarray(equity, dtype=np.float64)
    if len(e) < 2:
        raise ValueError("metrics need at least two equity points")
    r = period_returns(e)
    n = len(r)
    growth = e[-1] / e[0]
    total_return = growth - 1.0
    years = n / periods_per_year
    cagr = growth ** (1.0 / years) - 1.0 if growth > 0 else -1.0
    sd = float(np.std(r, ddof=1)) if n > 1 else 0.0
    mean = float(np.mean(r))
    sharpe = mean / sd * math.sqrt(periods_per_year) if sd > 0 else math.nan
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    sortino = mean / downside * math.sqrt(periods_per_year) if downside > 0 else math.nan
    mdd = max_drawdown(e)
    calmar = cagr / mdd if mdd > 0 else math.nan
    trips = round_trips(fills)
    gross_profit = sum(p for p, _ in trips if p > 0)
    gross_loss = -sum(p for p, _ in trips if p < 0)
    # Time in the market: the return over candle k+1 is earned by the position after that candle's
    # opening fill, which is position[k + 1] (position[0] is the start, before any fill).
    pos = np.asarray(position, dtype=np.float64)
    exposure = float(np.mean(pos[1:] > 0)) if len(pos) > 1 else 0.0
    return {
        "total_return": float(total_return),
        "cagr": float(cagr),
        "sharpe": _finite(sharpe),
        "sortino": _finite(sortino),
        "calmar": _finite(calmar),
        "max_drawdown": mdd,
        "profit_factor": gross_profit / gross_loss if gross_loss > 0 else None,
        "expectancy": float(np.mean([x for _, x in trips])) if trips else None,
        "win_rate": sum(1 for p, _ in trips if p > 0) / len(trips) if trips else None,
        "trades": len(trips),
        # Per 7 days of candles (crypto trades every day): the rate the oracle's is set against.
        "trades_per_week": len(trips) / (years * 365.0 / 7.0) if years > 0 else 0.0,
        "open_position_at_end": bool(pos[-1] > 0) if len(pos) else False,
        "exposure": exposure,
        "fees_paid": float(sum(f.fee for f in fills)),
        "turnover": float(sum(f.notional for f in fills)),
        "start": start,
        "end": end,
        "candles": int(len(e)),
        "final_equity": float(e[-1]),
    }


def result_metrics(result, periods_per_year: float, trials: int | None = None) -> dict:
    """``compute_metrics`` of a :class:`chartrl.backtest.runner.BacktestResult` (annualised with
    ``periods_per_year``); with ``trials`` also the probabilistic / deflated Sharpe; and the skill
    test (``skill_p_value``, ``skill_percentile``, chartrl.backtest.skill) under its fill model."""
    out = compute_metrics(
        result.equity,
        result.position,
        result.fills,
        periods_per_year,
        start=result.start.isoformat(),
        end=result.end.isoformat(),
    )
    if result.rules is not None:
        from chartrl.backtest.skill import result_skill

        out.update(result_skill(result))
    if trials is not None:
        out["deflated_sharpe"] = deflated_sharpe(period_returns(result.equity), trials)
    return out
