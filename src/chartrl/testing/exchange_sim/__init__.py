"""A loopback emulator of the Binance spot REST API for tests, demos and soak runs.

An unmodified ``ccxt.binance`` pointed at ``sim.url`` (``exchange.api_url`` in the config) loads
markets, pages klines, signs account and order requests and sees injected faults, all without
the network. See docs/emulator.md.
"""

from chartrl.testing.exchange_sim.clock import SimClock
from chartrl.testing.exchange_sim.faults import KINDS as FAULT_KINDS
from chartrl.testing.exchange_sim.faults import FaultPlan
from chartrl.testing.exchange_sim.market import SymbolRules
from chartrl.testing.exchange_sim.server import DEFAULT_API_KEY, DEFAULT_API_SECRET, ExchangeSim

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "FAULT_KINDS",
    "ExchangeSim",
    "FaultPlan",
    "SimClock",
    "SymbolRules",
]
