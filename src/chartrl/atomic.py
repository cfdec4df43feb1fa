"""Write a file so that a crash at any moment leaves the old file or the new one, never a torn one.

Shared by the candle store (Parquet), model checkpoints and the emulator's account state (JSON); any file a restart
must be able to trust goes through here.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# mkstemp creates 0600 files; an atomic rewrite should leave the permissions a plain write would
# (a service user must still read candles an operator imported). Read the umask once.
_UMASK = os.umask(0)
os.umask(_UMASK)
# A temp file untouched this long belongs to a write that was killed (a live write keeps writing to it).
STALE_TMP_SECONDS = 600


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` fills a temporary file beside ``path``; it is fsynced, renamed over ``path``, dir fsynced.

    Temporary files of ``path`` left by killed writes are removed first, once they are stale.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename itself must reach the disk, or a power cut could resurrect the old file.
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (renames into it, files created or removed) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    # Only this target's temps: mkstemp's random part has no dot, so ".a.<rand>.tmp" never matches a.b's.
    own = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.tmp")
    cutoff = time.time() - STALE_TMP_SECONDS
    with os.scandir(path.parent) as entries:
        for entry in entries:
            if own.fullmatch(entry.name):
                with contextlib.suppress(
                    OSError
                ):  # gone already, or not ours to remove: never fail the write
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
