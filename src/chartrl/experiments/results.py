"""``DIR/results.csv``: one row per (configuration, seed, fold), gathered from the trials' own
files, so a sweep resumed any number of times still has each unit once."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from chartrl.atomic import atomic_write
from chartrl.experiments.trainable import (
    ERROR_FILE,
    RESULT_FILE,
    SPLIT_METRICS,
    UNIT_FILE,
    attempts,
)

RESULTS_FILE = "results.csv"
_SPLIT = (
    "from",
    "until",
    "candles",
    *SPLIT_METRICS,
    "buy_hold_return",
    "buy_hold_sharpe",
)
COLUMNS = (
    "trial_id",
    "strategy",
    "config_id",
    "params",
    "seed",
    "fold",
    "status",
    "error",
    "attempts",
    "chosen_epoch",
    "chosen_updates",
    "seconds",
    *(f"{split}_{k}" for split in ("val", "test") for k in _SPLIT),
)
"""The columns, in order (docs/experiments.md; the report reads them)."""


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def trial_rows(out: Path) -> list[dict[str, Any]]:
    """Every started unit: its result when done, else a failed row with its last error (or
    ``interrupted`` when the sweep stopped before it ended)."""
    rows = []
    for path in sorted((Path(out) / "trials").glob("*/")):
        done = _read(path / RESULT_FILE)
        if done and done.get("status") == "done":
            rows.append(done)
            continue
        unit = _read(path / UNIT_FILE)
        if unit is None:
            continue  # created but not yet described: nothing to report
        try:
            error = (path / ERROR_FILE).read_text().strip()
        except OSError:
            error = "interrupted: the sweep stopped before this trial ended (--resume continues it)"
        rows.append({**unit, "status": "failed", "error": error, "attempts": attempts(path)})
    return rows


def write_results(out: Path) -> Path:
    """Write ``results.csv`` (atomically); empty cells for what a row lacks."""
    rows = trial_rows(out)
    path = Path(out) / RESULTS_FILE

    def write(fh: Any) -> None:
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r.get(k) for k in COLUMNS})
        fh.write(buf.getvalue().encode())

    atomic_write(path, write)
    return path
