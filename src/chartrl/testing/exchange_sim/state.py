"""Atomic JSON persistence of the emulated account, so it survives a restart of the emulator."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from chartrl.errors import DataError

FORMAT = 1


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write-then-rename: a reader (or a crash) sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, **state}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, None when the file does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataError(f"emulator state file {path} is not valid JSON ({exc}); delete it to start from the configured balances") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"emulator state file {path} has an unknown format; delete it to start from the configured balances")
    return data
