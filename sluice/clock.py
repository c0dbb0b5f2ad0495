"""The clock the middle layer reads (limiters, cooldowns, time budgets, the key cache, reconciliation).

Injected so tests can move time by hand instead of sleeping through wall-clock windows."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, deadlines, cache lifetimes)."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (timestamps that are stored or compared across processes)."""
        ...


class SystemClock:
    """The real clock: `time.monotonic()` and `time.time()`."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told (`advance`): for tests and simulations."""

    __slots__ = ("_mono", "_wall")

    def __init__(self, *, monotonic: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._mono = monotonic
        self._wall = wall

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._mono += seconds
        self._wall += seconds


SYSTEM_CLOCK: Clock = SystemClock()
