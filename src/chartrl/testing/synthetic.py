"""Synthetic BTC-like candles for offline demos and tests (they are not real prices).

Model: log returns with GARCH(1,1) volatility clustering and a two-state Markov regime (bull /
bear drift, the bear regime more volatile), fat-tailed Student-t shocks; intra-candle high/low from
the candle's own volatility; volume that rises with absolute return. Seeded, so reproducible.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chartrl.timeframe import timeframe_seconds


def synthetic_candles(
    n: int = 5000,
    seed: int = 7,
    start: str | pd.Timestamp = "2020-01-01",
    timeframe: str = "1h",
    price0: float = 9000.0,
) -> pd.DataFrame:
    """``n`` candles in the canonical frame (see chartrl.market.candles)."""
    rng = np.random.default_rng(seed)
    scale = np.sqrt(timeframe_seconds(timeframe) / 3600.0)
    # GARCH(1,1) on hourly returns, long-run hourly vol ~0.8 %.
    omega, alpha, beta = 0.8e-6, 0.08, 0.90
    drift = {0: 0.00012, 1: -0.00010}
    vol_mult = {0: 1.0, 1: 1.4}
    stay = 0.998
    regime, var = 0, omega / (1 - alpha - beta)
    rets = np.empty(n)
    for i in range(n):
        if rng.random() > stay:
            regime = 1 - regime
        shock = rng.standard_t(5) / np.sqrt(5 / 3)
        r = drift[regime] * scale**2 + np.sqrt(var) * vol_mult[regime] * scale * shock
        rets[i] = r
        # The regime multiplier is left out of the update so the process stays stationary.
        var = omega + alpha * var * min(shock * shock, 25.0) + beta * var
    close = price0 * np.exp(np.cumsum(rets))
    open_ = np.concatenate([[price0], close[:-1]]) * np.exp(rng.normal(0, 0.0003, n))
    spread = np.abs(rets) + np.abs(rng.normal(0, 0.004 * scale, n))
    high = np.maximum(open_, close) * np.exp(spread * rng.uniform(0.2, 0.8, n))
    low = np.minimum(open_, close) * np.exp(-spread * rng.uniform(0.2, 0.8, n))
    volume = 800 * scale**2 * (1 + 40 * np.abs(rets)) * rng.lognormal(0, 0.35, n)
    ts = pd.date_range(
        pd.Timestamp(start, tz="UTC"),
        periods=n,
        freq=pd.Timedelta(seconds=timeframe_seconds(timeframe)),
    )
    return pd.DataFrame(
        {
            "timestamp": ts.astype("datetime64[ns, UTC]"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )
