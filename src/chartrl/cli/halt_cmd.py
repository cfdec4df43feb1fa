"""chartrl halt set | clear | show: the operator's switch that stops (and resumes) order sending.

A halt is either the halt file (``risk.halt_file``, default ``<data dir>/HALT``) or a record in the
ledger's ``halts`` table (written by ``halt set``, by a balance mismatch, or by an operational
error such as insufficient funds). While either is present the risk check answers HOLD with the
reason ``halt_file`` / ``ledger_halt``; the daemon keeps running, fetching and deciding.

``halt show`` exits 0 whenever it could answer, like every command (1 error, 2 usage). Scripts ask
``halt show --check``: 0 not halted, 3 halted, so "halted" never reads as a failure to check.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime
from typing import Any

from chartrl.cli.app import settings

HALTED_EXIT = 3  # `halt show --check` when halted: distinct from 1 (error) and 2 (usage)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "halt", help="stop, resume or inspect order sending (halt set | clear | show)"
    )
    p.add_argument(
        "--data-dir", help="data directory (default: $CHARTRL_DATA_DIR, else config data.dir)"
    )
    hsub = p.add_subparsers(dest="halt_command", metavar="ACTION")
    hsub.required = True
    s = hsub.add_parser("set", help="halt trading now (recorded in the ledger)")
    s.add_argument(
        "reason", nargs="?", default="manual halt", help="why, shown by `halt show` and `status`"
    )
    _symbol_option(s, "halt only this one of market.symbols (default: every symbol)")
    s.set_defaults(func=_set)
    c = hsub.add_parser("clear", help="resume trading: clear ledger halts and remove the halt file")
    c.add_argument("--keep-file", action="store_true", help="leave the halt file in place")
    _symbol_option(
        c,
        "clear only the halts of this symbol (an all-symbol halt and the halt file stay)",
    )
    c.set_defaults(func=_clear)
    sh = hsub.add_parser("show", help="print the halts in force (with --check: exit 3 when halted)")
    sh.add_argument(
        "--check",
        action="store_true",
        help=f"for scripts: exit {HALTED_EXIT} when halted, 0 when not",
    )
    sh.set_defaults(func=_show)


def _symbol_option(parser: argparse.ArgumentParser, text: str) -> None:
    # Not dest="symbol": that is the series option, which would narrow the settings to it.
    parser.add_argument("--symbol", dest="halt_symbol", metavar="SYMBOL", help=text)


def _checked_symbol(s: Any, symbol: str | None) -> str | None:
    from chartrl.errors import UsageError

    if symbol is not None and symbol not in s.market.all_symbols:
        raise UsageError(
            f"--symbol {symbol} is not traded here; market.symbols is {s.market.all_symbols}"
        )
    return symbol


def _ledger(args: argparse.Namespace, readonly: bool = False):  # noqa: ANN202 - lazy import
    from chartrl.account.ledger import Ledger

    s = settings(args)
    return s, Ledger.for_data_dir(s.data_dir, readonly=readonly)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def halt(s: Any, source: str, reason: str, symbol: str | None = None) -> int:
    """Record a manual halt of ``symbol`` (None: every symbol) in the ledger (the CLI and the
    console's POST /api/halt); its id."""
    from chartrl.account.ledger import Ledger

    with Ledger.for_data_dir(s.data_dir) as ledger:
        return ledger.set_halt("manual", source, reason, symbol=_checked_symbol(s, symbol))


def resume(
    s: Any, cleared_by: str, keep_file: bool = False, symbol: str | None = None
) -> list[str]:
    """Clear the ledger halts (all, or only ``symbol``'s) and remove the halt file (unless
    ``keep_file`` or ``symbol``: the file halts every symbol); what was done."""
    from chartrl.account.ledger import Ledger

    with Ledger.for_data_dir(s.data_dir) as ledger:
        cleared = ledger.clear_halts(cleared_by, symbol=_checked_symbol(s, symbol))
        still = ledger.active_halts(symbol) if symbol else []
    lines = [
        f"cleared halt #{h.id} ({h.reason}{_of(h)}, {_when(h.created_ms)}): {h.details or ''}".rstrip(
            ": "
        )
        for h in cleared
    ]
    for h in still:
        lines.append(
            f"halt #{h.id} ({h.reason}) halts every symbol and stays: `chartrl halt clear`"
        )
    if symbol is not None:
        if s.halt_file.exists():
            lines.append(f"halt file {s.halt_file} halts every symbol and stays")
        if not cleared:
            lines.append(f"no halt of {symbol} alone was in force")
        return lines
    if any(h.reason == "balance_mismatch" for h in cleared):
        lines.append(
            "at its next start the live account first imports the fills of orders it had given up "
            "on, then takes the exchange's balances as its new baseline"
        )
    if s.halt_file.exists():
        if keep_file:
            lines.append(f"halt file {s.halt_file} kept: trading stays halted until it is removed")
        else:
            s.halt_file.unlink()
            lines.append(f"removed halt file {s.halt_file}")
    if not cleared and not s.halt_file.exists():
        lines.append("no halt was in force")
    return lines


def _of(h: Any) -> str:
    return f" of {h.symbol}" if getattr(h, "symbol", None) else ""


def _set(args: argparse.Namespace) -> None:
    sym = args.halt_symbol
    hid = halt(settings(args), f"cli:{getpass.getuser()}", args.reason, symbol=sym)
    what = f"trading of {sym}" if sym else "trading"
    again = f"chartrl halt clear --symbol {sym}" if sym else "chartrl halt clear"
    print(f"{what} halted (halt #{hid}: {args.reason}); resume with `{again}`")


def _clear(args: argparse.Namespace) -> None:
    for line in resume(
        settings(args), f"cli:{getpass.getuser()}", args.keep_file, symbol=args.halt_symbol
    ):
        print(line)


def _show(args: argparse.Namespace) -> int:
    from chartrl.account.ledger_conn import ledger_path

    s = settings(args)
    halted = False
    if s.halt_file.exists():
        halted = True
        print(f"halt file {s.halt_file} exists (remove it or run `chartrl halt clear`)")
    if ledger_path(s.data_dir).is_file():
        _s, ledger = _ledger(args, readonly=True)
        with ledger:
            for h in ledger.active_halts():
                halted = True
                print(
                    f"halt #{h.id} {h.reason}{_of(h)} since {_when(h.created_ms)} by {h.source}: "
                    f"{h.details or ''}"
                )
    if not halted:
        print("not halted")
    return HALTED_EXIT if halted and args.check else 0
