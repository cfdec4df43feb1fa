"""Short soak: the live tick against the emulator with faults and SIGKILLs (benchmarks/soak.py is the long one)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_soak_with_faults_and_kills(tmp_path: Path):
    from chartrl.daemon.soak import run_soak

    r = run_soak(
        tmp_path / "soak",
        ticks=26,
        speed=3600.0,
        kill_every=(2.5, 5.0),
        kill_phase=0.6,
        fault_rate=0.08,
        seed=2,
    )
    assert r.problems == [], r.problems
    # The run really was adversarial and really traded: kills happened, faults fired, orders filled.
    assert r.kills >= 1 and r.restarts >= 2 and r.faults >= 1
    assert r.orders >= 5 and r.fills >= r.orders
    assert r.decisions + r.missed == r.candles and r.decisions >= r.candles // 2
