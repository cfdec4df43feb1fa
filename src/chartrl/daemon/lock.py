"""One writer per data dir (invariant 7): an OS lock (``fcntl.flock``) on ``<data dir>/chartrl.lock``.

The daemon holds it from start to stop; ``retrain``, ``import`` and ``fetch`` hold it while they
run. A second process refuses to start with a line naming the holder's pid (exit 2). The lock is
the kernel's: it dies with its process, so a crash never leaves a stale lock behind (the pid
written in the file is only there to name the holder).

Within one process the lock is re-entrant (the daemon's tick fetches under the daemon's lock).
The daemon's retrain child inherits the daemon's locked file descriptor (``pass_fds`` and
``CHARTRL_LOCK_FD``): the same open file, so the same lock, and the child is no second writer.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chartrl.errors import UsageError

LOCK_FILE = "chartrl.lock"
ENV_LOCK_FD = "CHARTRL_LOCK_FD"

_held: dict[Path, tuple[int, int]] = {}  # lock file -> (fd, holders in this process)
_guard = threading.Lock()


def lock_path(data_dir: Path) -> Path:
    return Path(data_dir).expanduser() / LOCK_FILE


def _holder(path: Path) -> str:
    try:
        text = path.read_text().split()
    except OSError:
        text = []
    if not text:
        return "another process"
    return f"pid {text[0]}" + (f" ({' '.join(text[1:])})" if len(text) > 1 else "")


def _inherited(path: Path) -> int | None:
    """The locked descriptor of this data dir handed down by the daemon, if any."""
    raw = os.environ.get(ENV_LOCK_FD)
    if not raw or not raw.isdigit():
        return None
    fd = int(raw)
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return None
    return fd if same else None


def acquire(data_dir: Path, what: str) -> int:
    """Take (or re-enter) the lock of ``data_dir`` for ``what``; its descriptor. UsageError when held."""
    path = lock_path(data_dir)
    with _guard:
        if path in _held:
            fd, n = _held[path]
            _held[path] = (fd, n + 1)
            return fd
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = _inherited(path) if path.exists() else None
            inherited = fd is not None
            if fd is None:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise UsageError(
                f"cannot lock data dir {path.parent}: {exc.strerror}; check --data-dir and its permissions"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(
                f"data dir {path.parent} is in use by {_holder(path)}: one writer per data dir; "
                f"stop it first, or use another --data-dir (cannot {what})"
            ) from None
        if not inherited:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
        _held[path] = (fd, 1)
        return fd


def release(data_dir: Path) -> None:
    """Leave the lock once; the last holder in this process unlocks it."""
    path = lock_path(data_dir)
    with _guard:
        if path not in _held:
            return
        fd, n = _held[path]
        if n > 1:
            _held[path] = (fd, n - 1)
            return
        del _held[path]
        os.close(fd)  # closing our descriptor drops the flock (an inheriting child keeps its own)


@contextmanager
def data_dir_lock(data_dir: Path, what: str) -> Iterator[int]:
    """``with data_dir_lock(settings.data_dir, "fetch"):`` around a writer of the data dir."""
    fd = acquire(data_dir, what)
    try:
        yield fd
    finally:
        release(data_dir)


def child_env(fd: int) -> dict[str, str]:
    """The environment of a child that works under this process's lock (pass ``pass_fds=(fd,)``)."""
    return {**os.environ, ENV_LOCK_FD: str(fd)}
