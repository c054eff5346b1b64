"""The backend interface: a blocking solver run in its own thread, seen as an async generator.

A backend's `run(problem, run)` blocks, proposes schedules with `run.propose(levels)` and lower
bounds with `run.bound(value)`, and returns when done or soon after `run.stop` is set.
`stream()` runs it on a thread and yields those events without blocking the event loop; closing
or cancelling the generator sets `stop` and waits for the thread to end, so no work outlives the
solve that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from svc_optimizer.problem import IntArray, Problem


class BackendId(enum.IntEnum):
    """The backends, in the contract's `Backend` order (values match it)."""

    RELAX_POLISH = 1
    MILP = 2
    ANNEAL = 3
    QPU = 4


@dataclass(frozen=True, slots=True)
class Proposal:
    """A schedule from a backend (not yet checked or scored: the portfolio does that)."""

    backend: BackendId
    levels: IntArray


@dataclass(frozen=True, slots=True)
class Bound:
    """A proven lower bound on the total of every feasible schedule."""

    backend: BackendId
    lower_bound: float


@dataclass(frozen=True, slots=True)
class Extra:
    """Backend-specific figures for the final statistics (e.g. QPU timing)."""

    backend: BackendId
    figures: dict[str, object]


Event = Proposal | Bound | Extra


@dataclass
class Run:
    """What a running backend sees: its deadline, the stop flag, the best schedule so far."""

    backend: BackendId
    deadline: float  # time.monotonic() by which the run must have returned
    stop: threading.Event
    best: Callable[[], IntArray | None]
    emit: Callable[[Event], None] = field(default=lambda event: None)
    expect_warm_start: bool = False

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def should_stop(self) -> bool:
        return self.stop.is_set() or time.monotonic() >= self.deadline

    def propose(self, levels: IntArray) -> None:
        self.emit(Proposal(self.backend, levels.copy()))

    def bound(self, lower_bound: float) -> None:
        self.emit(Bound(self.backend, float(lower_bound)))


class Backend(Protocol):
    """A solver of the portfolio."""

    id: BackendId
    description: str
    min_budget_s: float
    max_zone_steps: int
    reports_lower_bound: bool

    def configured(self) -> bool: ...

    def run(self, problem: Problem, run: Run) -> None: ...


_DONE = object()


async def stream(backend: Backend, problem: Problem, run: Run) -> AsyncIterator[Event]:
    """Run `backend` on a thread and yield its events; errors are re-raised here."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()

    def put(item: object) -> None:
        # The loop may have closed while the thread was finishing.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        try:
            backend.run(problem, run)
        except BaseException as exc:  # handed to the awaiting side
            put(exc)
        finally:
            put(_DONE)

    run.emit = put
    thread = threading.Thread(target=work, name=f"solver-{backend.id.name.lower()}", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        run.stop.set()
        while thread.is_alive():
            await asyncio.sleep(0.002)
