"""The three actions every policy answers. Torch-free, so accounts and the ledger import it fast."""

from __future__ import annotations

from enum import IntEnum

N_ACTIONS = 3


class Action(IntEnum):
    HOLD = 0
    BUY = 1
    SELL = 2
