"""The daemon's notion of "now", injectable so the demo and the soak test run on an accelerated clock.

Production uses :class:`SystemClock`. The demo and the soak test pass the emulator's clock (see
:func:`as_clock`), so the tick believes it is at whatever simulated time the exchange is at.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the epoch, UTC."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FixedClock:
    """A clock that stays where it is put (tests, replay): ``advance`` moves it."""

    def __init__(self, now_ms: int) -> None:
        self._now = int(now_ms)

    def now_ms(self) -> int:
        return self._now

    def set(self, now_ms: int) -> None:
        self._now = int(now_ms)

    def advance(self, ms: int) -> None:
        self._now += int(ms)


class AcceleratedClock:
    """Time running ``speed`` times faster than the wall from ``start_ms`` (demo and soak children)."""

    def __init__(self, start_ms: int, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        self.start_ms, self.speed = int(start_ms), float(speed)
        self._t0 = time.monotonic()

    def now_ms(self) -> int:
        return self.start_ms + int((time.monotonic() - self._t0) * 1000.0 * self.speed)


class _Adapter:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def now_ms(self) -> int:
        inner = self.inner
        for name in ("now_ms", "milliseconds", "time_ms"):
            fn = getattr(inner, name, None)
            if callable(fn):
                return int(fn())
        value = inner.now() if callable(getattr(inner, "now", None)) else inner()
        if hasattr(value, "timestamp"):
            return int(value.timestamp() * 1000)
        return int(float(value) * 1000)  # seconds


def as_clock(obj: Any | None) -> Clock:
    """A :class:`Clock` from None (system time), a Clock, or the emulator's clock object."""
    if obj is None:
        return SystemClock()
    if isinstance(obj, Clock):
        return obj
    return _Adapter(obj)
