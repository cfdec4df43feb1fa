"""The retrain's safety around the champion: SIGTERM ends a cycle cleanly, and a promotion swaps
the champion and challenger directories atomically (``renameat2(RENAME_EXCHANGE)`` where Linux
has it, two renames otherwise), keeping the old champion as ``champion.prev``."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

from chartrl.atomic import fsync_dir


class RetrainAborted(BaseException):
    """SIGTERM during a cycle. A BaseException (like KeyboardInterrupt) so no ``except Exception`` on
    the way swallows it: the cycle unwinds through its cleanup and is recorded as failed."""


class SigtermAborts:
    """While active (main thread only), SIGTERM raises :class:`RetrainAborted`. Its default action
    would end the process at once, leaving the challenger directory and a ``running`` ledger row."""

    def __init__(self) -> None:
        self._previous: Any = None
        self._active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> SigtermAborts:
        if self._active:
            self._previous = signal.signal(signal.SIGTERM, self._abort)
        return self

    def _abort(self, signum: int, _frame: Any) -> None:
        self.hold()
        raise RetrainAborted(signal.Signals(signum).name)

    def hold(self) -> None:
        """Ignore SIGTERM from now on: what is left (the swap, the cleanup) takes milliseconds and
        must not be cut in half."""
        if self._active:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def __exit__(self, *exc: object) -> None:
        if self._active:
            # None: a handler installed outside Python, which cannot be put back; the default then.
            signal.signal(
                signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous
            )


# ------------------------------------------------------------------------------ directory swap
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two directories (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def promote(challenger: Path, champion: Path) -> Path:
    """Make ``challenger`` the champion; the old one becomes ``<champion>.prev``. Returns that path."""
    prev = champion.with_name(champion.name + ".prev")
    if prev.exists():
        shutil.rmtree(prev)
    if champion.exists() and _exchange(challenger, champion):
        # The champion path switched in one step; the challenger path now holds the old model.
        os.replace(challenger, prev)
    else:
        # A reader can find no champion for an instant here; the daemon retries at its next tick.
        if champion.exists():
            os.replace(champion, prev)
        os.replace(challenger, champion)
    fsync_dir(champion.parent)
    return prev
