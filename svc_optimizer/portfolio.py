"""The portfolio: run the backends that fit, keep the best schedule, stream each improvement.

Every proposal is checked against the hard constraints and scored by the one evaluator here, so
a backend can neither smuggle in an infeasible schedule nor misreport its objective. The solve
ends at the budget, when every backend is done, or as soon as the gap to the best lower bound
proves the schedule optimal (1e-4) or good enough (the caller's gap target). A failing backend
is counted and skipped; it never fails the solve.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field

from svc_optimizer.backends import Backend, BackendId, Bound, Event, Extra, Proposal, Run, stream
from svc_optimizer.breaker import CircuitBreaker, CircuitState
from svc_optimizer.evaluate import Breakdown, Violation, evaluate, violation
from svc_optimizer.feasibility import infeasibility
from svc_optimizer.problem import IntArray, Problem

OPTIMAL_GAP = 1e-4
"""Relative gap at or below which a schedule counts as proven optimal (the contract's)."""
FINAL_MARGIN_S = 0.01
"""Time kept back from the budget to stop the backends and send the final update."""


class Status(enum.Enum):
    IMPROVING = 1
    OPTIMAL = 2
    FEASIBLE = 3
    INFEASIBLE = 4
    NO_SOLUTION = 5


class PreferenceError(Exception):
    """The named backend cannot take this request; `unavailable` when only its breaker is open."""

    def __init__(self, message: str, unavailable: bool = False, retry_s: float = 1.0) -> None:
        super().__init__(message)
        self.unavailable = unavailable
        self.retry_s = retry_s


@dataclass
class Stats:
    """What one backend did in one solve (the contract's BackendStats)."""

    backend: BackendId
    runs: int = 0
    runs_failed: int = 0
    runs_timed_out: int = 0
    skip_reason: str = ""
    improvements: int = 0
    best_total: float | None = None
    wall_s: float = 0.0
    figures: dict[str, object] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return self.runs == 0


@dataclass(frozen=True)
class Update:
    """One message of the stream, in domain terms."""

    status: Status
    elapsed_s: float
    levels: IntArray | None = None
    objective: Breakdown | None = None
    backend: BackendId | None = None
    lower_bound: float | None = None
    gap: float | None = None
    infeasibility: Violation | None = None
    stats: tuple[Stats, ...] = ()

    @property
    def final(self) -> bool:
        return self.status is not Status.IMPROVING


def relative_gap(total: float, lower_bound: float) -> float:
    """The contract's gap: (total - bound) / max(|total|, 1e-9), never below 0."""
    return max(0.0, (total - lower_bound) / max(abs(total), 1e-9))


class Portfolio:
    """The backends of one replica, each with its own circuit breaker."""

    def __init__(
        self, backends: Sequence[Backend], breakers: dict[BackendId, CircuitBreaker] | None = None
    ) -> None:
        self.backends = sorted(backends, key=lambda b: b.id)
        self.breakers = breakers or {b.id: CircuitBreaker() for b in self.backends}

    def availability(self, backend: Backend) -> tuple[CircuitState, bool]:
        state = self.breakers[backend.id].state
        return state, backend.configured() and state is not CircuitState.OPEN

    def _plan(
        self, problem: Problem, budget_s: float, preference: BackendId | None
    ) -> tuple[list[Backend], dict[BackendId, str]]:
        zone_steps = problem.zones * problem.steps
        chosen: list[Backend] = []
        skipped: dict[BackendId, str] = {}
        for backend in self.backends:
            if preference is not None and backend.id != preference:
                reason = "not the preferred backend"
            elif not backend.configured():
                reason = "not configured"
            elif zone_steps > backend.max_zone_steps:
                reason = f"problem larger than its {backend.max_zone_steps} zone-steps"
            elif budget_s < backend.min_budget_s:
                reason = f"budget shorter than its {backend.min_budget_s:g} s minimum"
            elif not self.breakers[backend.id].allow():
                reason = "circuit breaker open"
            else:
                chosen.append(backend)
                continue
            skipped[backend.id] = reason
            if preference == backend.id:
                open_in = self.breakers[backend.id].half_open_in_s()
                raise PreferenceError(
                    f"backend {backend.id.name} cannot take this request: {reason}",
                    unavailable=reason == "circuit breaker open",
                    retry_s=open_in or 1.0,
                )
        if not chosen:
            raise PreferenceError("no backend can run: every circuit breaker is open", True)
        return chosen, skipped

    async def solve(
        self,
        problem: Problem,
        budget_s: float,
        preference: BackendId | None = None,
        gap_target: float | None = None,
    ) -> AsyncGenerator[Update]:
        """Stream improvements then one final update. Raises PreferenceError before any update."""
        start = time.monotonic()
        reason = infeasibility(problem)
        if reason is not None:
            none_run = tuple(Stats(b.id, skip_reason="problem infeasible") for b in self.backends)
            yield Update(
                Status.INFEASIBLE, time.monotonic() - start, infeasibility=reason, stats=none_run
            )
            return
        chosen, skipped = self._plan(problem, budget_s, preference)
        solve = _Solve(problem, start, max(budget_s - FINAL_MARGIN_S, 0.001), gap_target)
        stats = {b.id: Stats(b.id, skip_reason=skipped.get(b.id, "")) for b in self.backends}
        tasks = [
            asyncio.create_task(solve.drive(b, stats[b.id], self.breakers[b.id], len(chosen) > 1))
            for b in chosen
        ]
        try:
            async for update in solve.updates(tasks):
                yield update
        finally:
            solve.stop_all()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        yield solve.final(tuple(stats[b.id] for b in self.backends))


class _Solve:
    """The state of one solve: best schedule, best bound, and the merged event queue."""

    def __init__(
        self, problem: Problem, start: float, budget_s: float, gap_target: float | None
    ) -> None:
        self.problem = problem
        self.start = start
        self.deadline = start + budget_s
        self.gap_target = gap_target
        self.runs: list[Run] = []
        self.queue: asyncio.Queue[tuple[Event | None, Stats | None]] = asyncio.Queue()
        self.best: Update | None = None
        self.best_levels: IntArray | None = None
        self.lower_bound: float | None = None
        self._lock = threading.Lock()

    def stop_all(self) -> None:
        for run in self.runs:
            run.stop.set()

    def current_best(self) -> IntArray | None:
        with self._lock:
            return None if self.best_levels is None else self.best_levels.copy()

    async def drive(
        self, backend: Backend, stats: Stats, breaker: CircuitBreaker, peers: bool
    ) -> None:
        run = Run(
            backend.id, self.deadline, threading.Event(), self.current_best, expect_warm_start=peers
        )
        self.runs.append(run)
        began = time.monotonic()
        stats.runs += 1
        ok = True
        try:
            async for event in stream(backend, self.problem, run):
                await self.queue.put((event, stats))
            if time.monotonic() >= self.deadline:
                stats.runs_timed_out += 1
        except asyncio.CancelledError:
            if time.monotonic() >= self.deadline:  # not when stopped early by a proven gap
                stats.runs_timed_out += 1
            raise
        except Exception:  # a failing backend is counted, never fatal
            ok = False
            stats.runs_failed += 1
        finally:
            stats.wall_s = time.monotonic() - began
            breaker.record(ok)
            if not ok or stats.runs_timed_out == 0:
                await self.queue.put((None, stats))

    async def updates(self, tasks: list[asyncio.Task[None]]) -> AsyncIterator[Update]:
        running = len(tasks)
        while running and not self._done():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that arrives as the queue delivers, and the solve would go on.
                async with asyncio.timeout(remaining):
                    event, stats = await self.queue.get()
            except TimeoutError:
                return
            if event is None:
                running -= 1
            elif isinstance(event, Bound):
                if self.lower_bound is None or event.lower_bound > self.lower_bound:
                    self.lower_bound = event.lower_bound
            elif isinstance(event, Extra) and stats is not None:
                stats.figures.update(event.figures)
            elif isinstance(event, Proposal) and stats is not None:
                update = self._consider(event, stats)
                if update is not None:
                    yield update

    def _consider(self, proposal: Proposal, stats: Stats) -> Update | None:
        if violation(self.problem, proposal.levels) is not None:
            return None  # backends repair their output; a broken schedule is simply dropped
        objective = evaluate(self.problem, proposal.levels)
        if stats.best_total is None or objective.total < stats.best_total:
            stats.best_total = objective.total
        if (
            self.best is not None
            and self.best.objective is not None
            and objective.total >= self.best.objective.total - 1e-9
        ):
            return None
        stats.improvements += 1
        with self._lock:
            self.best_levels = proposal.levels.copy()
        self.best = Update(
            Status.IMPROVING,
            time.monotonic() - self.start,
            levels=proposal.levels,
            objective=objective,
            backend=proposal.backend,
        )
        return self._with_bound(self.best)

    def _with_bound(self, update: Update) -> Update:
        if self.lower_bound is None or update.objective is None:
            return update
        bound = min(self.lower_bound, update.objective.total)
        gap = relative_gap(update.objective.total, bound)
        return Update(
            update.status,
            update.elapsed_s,
            update.levels,
            update.objective,
            update.backend,
            bound,
            gap,
        )

    def _gap(self) -> float | None:
        if self.best is None or self.best.objective is None or self.lower_bound is None:
            return None
        return relative_gap(self.best.objective.total, self.lower_bound)

    def _done(self) -> bool:
        gap = self._gap()
        if gap is None:
            return False
        return gap <= OPTIMAL_GAP or (self.gap_target is not None and gap <= self.gap_target)

    def final(self, stats: tuple[Stats, ...]) -> Update:
        elapsed = time.monotonic() - self.start
        if self.best is None:
            return Update(Status.NO_SOLUTION, elapsed, stats=stats)
        gap = self._gap()
        status = Status.OPTIMAL if gap is not None and gap <= OPTIMAL_GAP else Status.FEASIBLE
        best = self._with_bound(self.best)
        return Update(
            status,
            elapsed,
            best.levels,
            best.objective,
            best.backend,
            best.lower_bound,
            best.gap,
            stats=stats,
        )
