"""Run a backend in a child process: true parallelism beside the event loop and other backends.

HiGHS's branch and bound would otherwise compete for the interpreter with the local search
threads. Children come from a forkserver (started clean, never from the gRPC process itself, so
no gRPC state is forked) that has the solver modules preloaded, so a child starts in
milliseconds. The parent side is an ordinary backend: a relay thread waits for the warm start,
starts the child, forwards its events and, when the solve stops, kills the child and reaps it,
so no process outlives its solve.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from svc_optimizer.backends import Backend, BackendId, Event, Run
from svc_optimizer.problem import IntArray, Problem

PRELOAD = ["numpy", "highspy", "svc_optimizer.milp", "svc_optimizer.anneal"]
CHILD_NICENESS = 5
WARM_START_WAIT_FRACTION = 0.3
"""Share of the budget spent waiting for a schedule to warm-start the child with."""

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)
_DONE = "done"


def warm_up() -> None:
    """Start the forkserver now (a second or so), not during the first solve."""
    process = _context.Process(target=time.sleep, args=(0,), daemon=True)
    process.start()
    process.join()


def _child(
    factory: Callable[[], Backend],
    problem: Problem,
    deadline: float,
    warm: IntArray | None,
    pipe: multiprocessing.connection.Connection,
) -> None:
    # Lower priority than the service's own threads: on a busy machine the local search, which
    # gives the early answers, keeps its core; the child still gets every idle cycle.
    os.nice(CHILD_NICENESS)
    backend = factory()
    run = Run(backend.id, deadline, threading.Event(), lambda: warm, emit=pipe.send)
    try:
        backend.run(problem, run)
    except BaseException as exc:  # reported to the parent, which re-raises it
        pipe.send(RuntimeError(f"{backend.id.name}: {type(exc).__name__}: {exc}"))
    finally:
        pipe.send(_DONE)


class Isolated:
    """`factory()`'s backend, run in a child process; same attributes as the backend."""

    def __init__(self, factory: Callable[[], Backend]) -> None:
        self._factory = factory
        inner = factory()
        self.id: BackendId = inner.id
        self.description: str = inner.description
        self.min_budget_s: float = inner.min_budget_s
        self.max_zone_steps: int = inner.max_zone_steps
        self.reports_lower_bound: bool = inner.reports_lower_bound
        self._configured = inner.configured()

    def configured(self) -> bool:
        return self._configured

    def run(self, problem: Problem, run: Run) -> None:
        wait_until = time.monotonic() + WARM_START_WAIT_FRACTION * run.remaining_s()
        while run.expect_warm_start and run.best() is None and time.monotonic() < wait_until:
            if run.stop.wait(0.005):
                return
        receiver, sender = _context.Pipe(duplex=False)
        child = _context.Process(
            target=_child,
            args=(self._factory, problem, run.deadline, run.best(), sender),
            name=f"solver-{self.id.name.lower()}",
            daemon=True,
        )
        child.start()
        sender.close()
        try:
            self._relay(receiver, run)
        finally:
            receiver.close()
            if child.is_alive():
                child.kill()
            child.join()

    def _relay(self, receiver: multiprocessing.connection.Connection, run: Run) -> None:
        while not run.should_stop():
            if not receiver.poll(0.005):
                continue
            try:
                message: Any = receiver.recv()
            except EOFError as exc:
                raise RuntimeError(f"{self.id.name} process ended unexpectedly") from exc
            if message == _DONE:
                return
            if isinstance(message, BaseException):
                raise message
            event: Event = message
            run.emit(event)
