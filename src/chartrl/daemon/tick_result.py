"""What one tick reports: :class:`TickResult`, logged as the one ``tick`` event, and its helpers."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from chartrl.actions import ACTIONS


@dataclass
class TickResult:
    symbol: str
    candle_ms: int
    """Open time of the candle decided on (the newest closed one)."""
    status: str
    """done | recovered (executed a decision recorded before a crash) | skipped (already done) | missed."""
    action: int | None = None
    final_action: int | None = None
    reason: str | None = None
    price: float | None = None
    equity: float | None = None
    position: float | None = None
    order: dict[str, Any] | None = None
    missed: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def as_log(self) -> dict[str, Any]:
        d = asdict(self)
        d["candle"] = pd.Timestamp(self.candle_ms, unit="ms", tz="UTC").isoformat()
        for k in ("action", "final_action"):
            if d[k] is not None:
                d[k] = ACTIONS.get(d[k], d[k])
        return d


def ms_since(t0: float) -> float:
    """Milliseconds since the ``time.perf_counter()`` reading ``t0``, to 0.01 ms."""
    return round((time.perf_counter() - t0) * 1000.0, 2)


def iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()
