"""benchmarks/epoch_worker.py, the epoch-time regression check's worker, still runs on the current
code: it calls the trainer directly, and once broke unnoticed when a trainer function moved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from chartrl.testing.synthetic import synthetic_candles

ROOT = Path(__file__).resolve().parents[1]


def test_epoch_worker_times_the_current_code(tmp_path: Path) -> None:
    candles = synthetic_candles(4_000, seed=5)
    ms = candles["timestamp"].astype("int64") // 1_000_000
    csv = tmp_path / "candles.csv"
    candles.assign(timestamp=ms.astype(str)).to_csv(csv, index=False)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "epoch_worker.py"), "--csv", str(csv)]
    cmd += ["--policies", "cnn", "--steps", "16"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    row = json.loads(res.stdout.splitlines()[-1])
    assert row["policy"] == "cnn" and row["updates"] == 1
    assert row["epoch_s"] > row["val_s"] > 0 and row["wall_epoch_s"] > 0
    # the whole worker's figures benchmarks/allocator.py compares, malloc set as the CLI sets it
    assert row["cpu_total_s"] > row["sys_s"] > 0 and row["wall_total_s"] > 0
    assert row["maxrss_mb"] > 0 and isinstance(row["malloc"], bool)
