"""The SQLite ledger: every decision, order, fill, balance, halt and piece of state that a restart needs.

One file, ``<data dir>/ledger.sqlite``, in WAL mode so that readers (``chartrl status``, ``chartrl
halt show``) never block the daemon and the daemon never blocks them. Writes that belong together
(an order's new state and its fills, a paper book and the fill that changed it) happen in one
transaction (:meth:`Ledger.transaction`), so a kill leaves either all of them or none.

:class:`Ledger` is one connection with the tables' reads and writes joined in, each in its module:

* :mod:`chartrl.account.ledger_conn`: the file, the schema migration on open, transactions, flags;
* :mod:`chartrl.account.ledger_orders`: decisions, orders and fills (``OrderRow``, ``FillRow``);
* :mod:`chartrl.account.ledger_halts`: halts (all symbols or one) and risk days (``HaltRow``);
* :mod:`chartrl.account.ledger_state`: balances, paper books, model versions, recurrent states and
  retrain results;
* :mod:`chartrl.account.migrations`: the schema itself, as numbered migrations.
"""

from __future__ import annotations

from chartrl.account.ledger_halts import LedgerHalts
from chartrl.account.ledger_orders import LedgerOrders
from chartrl.account.ledger_state import LedgerState


class Ledger(LedgerOrders, LedgerHalts, LedgerState):
    """A connection to the ledger; safe to share between threads of one process."""
