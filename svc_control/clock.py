"""Time for the control loop: the wall clock, or simulated time that runs faster.

The loop asks a `Clock` what time it is and sleeps until the next interval through it, so the
same code runs a real building in real time and a simulated week in minutes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What the control loop needs from time."""

    def now_s(self) -> float:
        """Seconds since the epoch, in the clock's time."""
        ...

    async def sleep_until(self, time_s: float) -> None:
        """Return once the clock reads at least `time_s`."""
        ...


class WallClock:
    """Real time."""

    def now_s(self) -> float:
        """See `Clock`."""
        return time.time()

    async def sleep_until(self, time_s: float) -> None:
        """See `Clock`."""
        delay_s = time_s - time.time()
        if delay_s > 0:
            await asyncio.sleep(delay_s)


class AcceleratedClock:
    """Simulated time starting at `start_s` that runs `speedup` times faster than real time.

    With `speedup` 96, a 15-minute control interval passes in about 9.4 real seconds.
    """

    def __init__(self, start_s: float, speedup: float) -> None:
        if not speedup > 0:
            raise ValueError("speedup must be positive")
        self._start_s = start_s
        self._speedup = speedup
        self._real_start = time.monotonic()

    def now_s(self) -> float:
        """See `Clock`."""
        return self._start_s + (time.monotonic() - self._real_start) * self._speedup

    async def sleep_until(self, time_s: float) -> None:
        """See `Clock`."""
        delay_s = (time_s - self.now_s()) / self._speedup
        if delay_s > 0:
            await asyncio.sleep(delay_s)


class ManualClock:
    """Time that moves only when told to (`advance`); sleepers wake when their time comes.

    For deterministic tests and for stepping a simulation in lock-step with the loop.
    """

    def __init__(self, start_s: float) -> None:
        self._now_s = start_s
        self._changed = asyncio.Event()

    def now_s(self) -> float:
        """See `Clock`."""
        return self._now_s

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` and wake every sleeper whose time has come."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now_s += seconds
        self._changed.set()
        self._changed = asyncio.Event()

    async def sleep_until(self, time_s: float) -> None:
        """See `Clock`."""
        while self._now_s < time_s:
            await self._changed.wait()
