"""The emulator's notion of "now": manual (tests move it) or accelerated wall time (demos, soaks)."""

from __future__ import annotations

import threading
import time


class SimClock:
    """Milliseconds since the epoch as the emulated exchange sees them. Thread-safe.

    Manual (``speed=None``): time stands still until ``set``/``advance``. Accelerated: time runs at
    ``speed`` times the wall clock from ``start_ms`` (``speed=3600`` turns an hour into a second);
    ``set``/``advance`` still jump it, and it keeps running from there.
    """

    def __init__(self, start_ms: int, speed: float | None = None) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(
                f"SimClock speed must be positive (got {speed}); use None for a manual clock"
            )
        self._lock = threading.Lock()
        self._base_ms = int(start_ms)
        self._speed = speed
        self._wall0 = time.monotonic()

    @property
    def speed(self) -> float | None:
        return self._speed

    @property
    def manual(self) -> bool:
        return self._speed is None

    def now_ms(self) -> int:
        with self._lock:
            return self._now_locked()

    def _now_locked(self) -> int:
        if self._speed is None:
            return self._base_ms
        return self._base_ms + int((time.monotonic() - self._wall0) * 1000.0 * self._speed)

    def set(self, ms: int) -> None:
        """Jump to ``ms`` (backwards too: a test may rewind, the exchange never would)."""
        with self._lock:
            self._base_ms = int(ms)
            self._wall0 = time.monotonic()

    def advance(self, ms: int) -> int:
        """Move forward by ``ms``; returns the new now."""
        with self._lock:
            self._base_ms = self._now_locked() + int(ms)
            self._wall0 = time.monotonic()
            return self._base_ms

    def __repr__(self) -> str:
        mode = "manual" if self._speed is None else f"x{self._speed:g}"
        return f"SimClock(now_ms={self.now_ms()}, {mode})"
