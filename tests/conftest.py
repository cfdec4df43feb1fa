"""Fixtures shared by the whole suite (add fixtures of one area to that area's test file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CHARTRL_SHARED_DATA", REPO.parent / "shared" / "data"))
SHARED_BTC = SHARED_DATA / "Binance_BTCUSDT_1h.csv"

# Tests never use more than the machine's two cores for torch, and never reach the network.
# One thread: on this shared 2-core machine two torch threads were up to 10x slower per op.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's config, data dir or CHARTRL__ overrides."""
    for name in list(os.environ):
        if name.startswith("CHARTRL"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHARTRL_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(autouse=True)
def _reset_logging():
    """A test that configures logging (a CLI run at warning level, say) must not leak into the next."""
    yield
    import logging

    import structlog

    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []
    logging.getLogger().setLevel(logging.WARNING)


@pytest.fixture
def shared_btc_csv() -> Path:
    """The real Binance BTC/USDT hourly export beside the repo; skips when it is absent."""
    if not SHARED_BTC.is_file():
        pytest.skip(f"shared data {SHARED_BTC} is absent (see ../shared/data/README.md)")
    return SHARED_BTC


@pytest.fixture
def candles():
    """3,000 synthetic hourly candles (seeded) in the canonical frame."""
    from chartrl.testing.synthetic import synthetic_candles

    return synthetic_candles(3000, seed=11)
