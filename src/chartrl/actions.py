"""The three actions every policy answers. Torch-free, so accounts and the ledger import it fast."""

from __future__ import annotations

from enum import IntEnum

N_ACTIONS = 3


class Action(IntEnum):
    HOLD = 0
    BUY = 1
    SELL = 2


ACTIONS = {int(a): a.name.lower() for a in Action}
"""Action number -> its name in ledgers, logs, the status and the console: 0 hold, 1 buy, 2 sell."""
