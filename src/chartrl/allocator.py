"""glibc malloc set for the tensor work of training, validation and backtests.

A training step allocates and frees batches of chart tensors of several MB each. glibc serves
any block above its mmap threshold (128 KiB at first, rising with use) with a fresh ``mmap``
and returns it with ``munmap`` when freed, and it trims the heap's free top back to the system
beyond 128 KiB: so each batch is new zeroed pages, one page fault per 4 KiB, and the kernel took
15-40 % of a training process's CPU time on the 2-core machine. ``tune()`` keeps such memory
in the heap instead: an mmap threshold of 32 MiB (the most ``mallopt`` accepts on 64-bit Linux),
up to ``TRIM_THRESHOLD`` of freed memory kept for the next batch, and the heap grown
``TOP_PAD`` at a time, so a block above the threshold is also cut from the heap's top. The same
work then ran 1.6x faster (benchmarks/allocator.py, docs/training.md "The memory allocator").
The price is memory a process keeps instead of returning, up to ``TRIM_THRESHOLD``.

It changes nothing when the C library is not glibc, when ``CHARTRL_MALLOC=system``, or when the
user set glibc's own knobs (``MALLOC_*_`` variables or a ``glibc.malloc`` tunable): theirs win.
"""

from __future__ import annotations

import ctypes
import os

ENV = "CHARTRL_MALLOC"
"""``system``: leave malloc as the C library configured it."""
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 256 << 20
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_GLIBC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_done: list[bool] = []


def user_choice(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Why malloc is left alone (a short reason), or None when ``tune`` may set it."""
    if environ.get(ENV, "").strip().lower() == "system":
        return f"{ENV}=system"
    for var in _GLIBC_VARS:
        if var in environ:
            return var
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def _libc() -> ctypes.CDLL | None:
    """The C library this process runs on (its own symbols: no ``find_library`` subprocess at
    every command's start), when it is glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt as a no-op)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def tune() -> bool:
    """Set malloc for this process (once; later calls return the first answer): True when set.
    Silent: it runs before a command has configured logging (a log line then would reach stdout)."""
    if _done:
        return _done[0]
    reason = user_choice()
    libc = None if reason else _libc()
    ok = libc is not None and all(
        libc.mallopt(k, v) == 1
        for k, v in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
        )
    )
    _done.append(ok)
    return ok
