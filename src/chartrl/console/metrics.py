"""``/metrics`` for Prometheus: computed from the ledger at each scrape, never kept in the console.

The console may run apart from the daemon (``chartrl serve``), so it cannot count ticks as they
happen; everything is derived from what the daemon recorded. The tick latency is the time from a
candle's close to its decision being recorded (tick delay, fetch, render, policy), over every
decision of the book: the histogram only grows, as Prometheus expects of one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from chartrl.console.data import ConsoleData
from chartrl.timeframe import timeframe_ms

LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Seconds after the candle close (the default tick delay is a few seconds)."""


class LedgerCollector(Collector):
    def __init__(self, data: ConsoleData) -> None:
        self.data = data

    def collect(self) -> Iterator[Metric]:
        d = self.data
        ser = d.series()
        labels = ["symbol", "mode"]
        lv = [ser.symbol, ser.mode]
        st = d.status()

        up = GaugeMetricFamily(
            "chartrl_daemon_up", "1 while the daemon's process is alive", labels=labels
        )
        up.add_metric(lv, 1.0 if st["running"] else 0.0)
        yield up

        latency = _latency(d, ser.symbol, ser.mode, timeframe_ms(ser.timeframe))
        h = HistogramMetricFamily(
            "chartrl_tick_latency_seconds",
            "Seconds from a candle's close to its decision being recorded",
            labels=labels,
        )
        counts = [int((latency <= b).sum()) for b in LATENCY_BUCKETS]
        h.add_metric(
            lv,
            [(str(b), c) for b, c in zip(LATENCY_BUCKETS, counts, strict=True)]
            + [("+Inf", len(latency))],
            float(latency.sum()),
        )
        yield h

        last = GaugeMetricFamily(
            "chartrl_last_tick_timestamp_seconds",
            "When the last decision was recorded",
            labels=labels,
        )
        if st["last_tick"]:
            last.add_metric(lv, datetime.fromisoformat(st["last_tick"]).timestamp())
        yield last

        for name, key, text in (
            ("chartrl_ticks", "ticks_done", "Ticks since the daemon started"),
            ("chartrl_ticks_missed", "ticks_missed", "Candles missed since the daemon started"),
        ):
            c = CounterMetricFamily(name, text, labels=labels)
            if st[key] is not None:
                c.add_metric(lv, float(st[key]))
            yield c

        yield from _book(d, st, labels, lv)

        halts = d.halts()
        g = GaugeMetricFamily(
            "chartrl_halts_active", "Halts in force (ledger, halt file)", labels=["reason"]
        )
        reasons: dict[str, int] = {}
        for x in halts["active"]:
            reasons[x["reason"]] = reasons.get(x["reason"], 0) + 1
        if halts["halt_file"]["exists"]:
            reasons["halt_file"] = 1
        for reason, n in sorted(reasons.items()):
            g.add_metric([reason], float(n))
        yield g

        orders = GaugeMetricFamily(
            "chartrl_orders", "Orders in the ledger by state", labels=["mode", "state"]
        )
        for r in d.order_states():
            orders.add_metric([r["mode"], r["state"]], float(r["n"]))
        yield orders

        retrains = CounterMetricFamily(
            "chartrl_retrains", "Retrain cycles by outcome", labels=["status"]
        )
        outcomes: dict[str, int] = {}
        for r in d.retrains(10_000):
            outcomes[r["status"]] = outcomes.get(r["status"], 0) + 1
        for status, n in sorted(outcomes.items()):
            retrains.add_metric([status], float(n))
        yield retrains

        age = GaugeMetricFamily(
            "chartrl_model_age_seconds", "Age of the champion model (since it was saved)"
        )
        saved = d.model_saved_at()
        if saved is not None:
            age.add_metric([], (datetime.now(UTC) - saved).total_seconds())
        yield age


def _book(d: ConsoleData, st: dict[str, Any], labels: list[str], lv: list[str]) -> Iterator[Metric]:
    eq = d.equity()
    values = {
        "chartrl_equity": ("Equity of the book in the quote currency", st["equity"]),
        "chartrl_position": ("Position of the book in the base currency", st["position"]),
        "chartrl_drawdown": (
            "Current fall from the equity peak, a fraction (0 at a new peak)",
            -eq["drawdown"][-1] if eq["drawdown"] else None,
        ),
    }
    price, cash, pos = st["last_price"], st["cash"], st["position"]
    exposure = None
    if price is not None and cash is not None and pos is not None and cash + pos * price > 0:
        exposure = pos * price / (cash + pos * price)  # one price for both: at most 1
    values["chartrl_exposure"] = ("Share of the equity held in the coin", exposure)
    for name, (text, value) in values.items():
        g = GaugeMetricFamily(name, text, labels=labels)
        if value is not None:
            g.add_metric(lv, float(value))
        yield g


def _latency(d: ConsoleData, symbol: str, mode: str, step_ms: int) -> np.ndarray:
    rows = d.latency_rows(symbol, mode)
    if not rows:
        return np.zeros(0)
    a = np.asarray(rows, dtype=np.float64)
    return np.maximum(a[:, 0] - (a[:, 1] + step_ms), 0.0) / 1000.0


def make_registry(data: ConsoleData) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(data))
    return registry
