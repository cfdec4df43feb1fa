"""Atomic JSON persistence of the emulated account, so it survives a restart of the emulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chartrl.atomic import atomic_write
from chartrl.errors import DataError

FORMAT = 1


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write-then-rename: a reader (or a crash) sees the old file or the new one, never half."""
    data = json.dumps({"format": FORMAT, **state}, indent=1).encode("utf-8")
    atomic_write(path, lambda fh: fh.write(data))


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, None when the file does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DataError(
            f"emulator state file {path} cannot be read ({reason}); pass a JSON file path to --state-file"
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataError(
            f"emulator state file {path} is not valid JSON ({exc}); delete it to start from the configured balances"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(
            f"emulator state file {path} has an unknown format; delete it to start from the configured balances"
        )
    return data
