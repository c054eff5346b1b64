"""A circuit breaker per backend: stop using a backend that keeps failing, probe it later.

CLOSED counts consecutive failures; `failure_threshold` of them open the breaker for
`open_s` seconds; then it is HALF_OPEN and lets one run through: success closes it, failure
opens it again. The clock is injectable so tests need no sleeping.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Thread-safe breaker; `allow()` before a run, then `record(ok)` after it."""

    def __init__(
        self,
        failure_threshold: int = 3,
        open_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._state()

    def _state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at >= self.open_s:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def half_open_in_s(self) -> float | None:
        """Seconds until an OPEN breaker turns HALF_OPEN; None unless OPEN."""
        with self._lock:
            if self._state() is not CircuitState.OPEN or self._opened_at is None:
                return None
            return self._opened_at + self.open_s - self._clock()

    def allow(self) -> bool:
        """Whether a run may start now; in HALF_OPEN only one probe at a time."""
        with self._lock:
            state = self._state()
            if state is CircuitState.CLOSED:
                return True
            if state is CircuitState.HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def record(self, ok: bool) -> None:
        """The outcome of a run that `allow()` let through."""
        with self._lock:
            self._probing = False
            if ok:
                self._failures = 0
                self._opened_at = None
                return
            self._failures += 1
            if self._opened_at is not None or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
