"""history.csv: one row per validation point of a run (see docs/training.md for the columns)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any


def history_bytes(rows: list[dict[str, Any]]) -> bytes:
    """The rows as CSV, columns in order of first appearance (rows may lack some)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def read_history(out_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``out_dir/history.csv`` (strings, as csv reads them; [] when absent)."""
    path = out_dir / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))
