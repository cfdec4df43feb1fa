"""chartrl.allocator: glibc keeps large freed blocks for the next batch instead of handing them
back to the kernel (a page fault per 4 KiB on every reuse), unless the user chose otherwise."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from chartrl import allocator

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"

# Batches of 8, 24 and 48 MiB in turn, as a training step's tensors of several sizes: by default
# the 48 MiB one, above the 32 MiB that glibc's own adaptive threshold can reach, is a fresh mmap
# every time (and the heap's free top is trimmed back); tuned, all are served from a heap that
# keeps what was freed.
FAULTS = """
import ctypes, resource
from chartrl import allocator
tuned = allocator.tune()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for n in [8 << 20, 24 << 20, 48 << 20] * 8:
    p = libc.malloc(n)
    libc.memset(p, 1, n)
    libc.free(p)
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(**env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "CHARTRL_"))}
    clean.pop("GLIBC_TUNABLES", None)
    res = subprocess.run(
        [sys.executable, "-c", FAULTS], env={**clean, **env}, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-2000:]
    tuned, faults = res.stdout.split()
    return tuned == "True", int(faults)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_tuned_malloc_reuses_freed_blocks_instead_of_faulting_them_in_again() -> None:
    tuned, faults = _faults()
    system, system_faults = _faults(CHARTRL_MALLOC="system")
    assert tuned and not system
    # 8 x 48 MiB of fresh pages by default (~98k faults); tuned, the first round's ~20k only.
    assert system_faults > 90_000
    assert faults * 4 < system_faults


def test_the_users_own_malloc_settings_win() -> None:
    assert allocator.user_choice({}) is None
    assert allocator.user_choice({"PATH": "/bin"}) is None
    assert allocator.user_choice({"CHARTRL_MALLOC": "System "}) == "CHARTRL_MALLOC=system"
    assert allocator.user_choice({"MALLOC_TRIM_THRESHOLD_": "0"}) == "MALLOC_TRIM_THRESHOLD_"
    tunables = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1024"}
    assert allocator.user_choice(tunables) == "GLIBC_TUNABLES"
    assert allocator.user_choice({"GLIBC_TUNABLES": "glibc.cpu.x86_ibt=on"}) is None


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_user_settings_leave_malloc_alone() -> None:
    tuned, _ = _faults(MALLOC_TOP_PAD_="0")
    assert not tuned
