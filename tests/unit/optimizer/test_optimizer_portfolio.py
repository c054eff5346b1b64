"""The portfolio: exact on small problems, robust to failing backends, stoppable."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import threading

import numpy as np
import pytest
from dwave.system.testing import MockDWaveSampler

from svc_optimizer.anneal import Anneal
from svc_optimizer.backends import BackendId, Run
from svc_optimizer.breaker import CircuitBreaker, CircuitState
from svc_optimizer.evaluate import Constraint, evaluate, totals, violation
from svc_optimizer.instances import generated_problem
from svc_optimizer.isolated import Isolated
from svc_optimizer.milp import Milp
from svc_optimizer.portfolio import Portfolio, PreferenceError, Status, Update
from svc_optimizer.problem import Problem, from_proto
from svc_optimizer.qpu import Qpu
from svc_optimizer.relax_polish import RelaxPolish


class Failing:
    """A backend that always raises, standing in for one that is down."""

    id = BackendId.ANNEAL
    description = "always fails"
    min_budget_s = 0.0
    max_zone_steps = 20_000
    reports_lower_bound = False

    def configured(self) -> bool:
        return True

    def run(self, problem: Problem, run: Run) -> None:
        raise RuntimeError("backend down")


class Stubborn:
    """A backend that keeps working until told to stop, to observe cancellation."""

    id = BackendId.ANNEAL
    description = "runs until stopped"
    min_budget_s = 0.0
    max_zone_steps = 20_000
    reports_lower_bound = False
    started = threading.Event()

    def configured(self) -> bool:
        return True

    def run(self, problem: Problem, run: Run) -> None:
        self.started.set()
        while not run.stop.is_set():
            run.stop.wait(0.01)


async def _collect(
    portfolio: Portfolio, problem: Problem, budget_s: float, **kw: object
) -> list[Update]:
    return [u async for u in portfolio.solve(problem, budget_s, **kw)]  # type: ignore[arg-type]


def _brute_force(problem: Problem) -> float:
    choices = [range(int(n)) for n in problem.level_count]
    grid = np.array(list(itertools.product(*[c for c in choices for _ in range(problem.steps)])))
    grid = grid.reshape(-1, problem.zones, problem.steps)
    feasible = [violation(problem, g) is None for g in grid]
    return float(totals(problem, grid[np.array(feasible)]).min())


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_on_small_problems_the_result_equals_the_exhaustive_optimum(seed: int) -> None:
    # 2 zones x 4 steps x 4 levels: 16 two-bit level encodings, 65,536 schedules.
    message = generated_problem(2, 4, seed, levels=4, cap_fraction=0.6, min_on_steps=2)
    message.zones[0].initial_level_index = 1
    problem = from_proto(message)
    updates = await _collect(Portfolio([RelaxPolish(), Milp()]), problem, 20.0)
    final = updates[-1]
    assert final.status is Status.OPTIMAL
    assert final.objective is not None
    assert final.objective.total == pytest.approx(_brute_force(problem), rel=1e-6, abs=1e-9)


def _advantage_like_mock() -> MockDWaveSampler:
    return MockDWaveSampler(topology_type="pegasus", topology_shape=[16])


def _portfolios() -> dict[str, tuple[Portfolio, BackendId | None, float]]:
    return {
        "auto": (Portfolio([RelaxPolish(), Isolated(Milp)]), None, 0.5),
        "milp": (Portfolio([RelaxPolish(), Milp()]), BackendId.MILP, 0.3),
        "milp process": (Portfolio([Isolated(Milp)]), BackendId.MILP, 0.5),
        "anneal": (Portfolio([Anneal()]), BackendId.ANNEAL, 2.0),
        # MockDWaveSampler: the one allowed stand-in, for the unreachable D-Wave cloud; with an
        # Advantage-sized (Pegasus 16) graph, as the default small Chimera cannot embed 48
        # densely coupled variables.
        "qpu": (Portfolio([Qpu(_advantage_like_mock)]), BackendId.QPU, 20.0),
    }


@pytest.mark.parametrize("name", ["auto", "milp", "milp process", "anneal", "qpu"])
async def test_every_schedule_sent_is_feasible_and_scored_by_the_evaluator(name: str) -> None:
    # 3 zones x 8 steps x 2 bits: small enough to embed on the (mock) QPU directly.
    message = generated_problem(3, 8, 5, min_on_steps=2, min_off_steps=2)
    message.zones[2].initial_level_index = 3
    message.zones[2].initial_state_steps = 0
    problem = from_proto(message)
    portfolio, preference, budget_s = _portfolios()[name]
    updates = await _collect(portfolio, problem, budget_s, preference=preference)
    assert updates[-1].final and all(not u.final for u in updates[:-1])
    totals_sent = []
    for update in updates:
        assert update.levels is not None and update.objective is not None
        assert violation(problem, update.levels) is None
        assert update.objective == evaluate(problem, update.levels)
        if preference is not None:
            assert update.backend is preference
        totals_sent.append(update.objective.total)
    improving = totals_sent[:-1]
    assert all(b < a for a, b in itertools.pairwise(improving))
    assert totals_sent[-1] == min(totals_sent)


async def test_a_failing_backend_does_not_fail_the_solve_and_is_counted() -> None:
    problem = from_proto(generated_problem(3, 24, 1))
    breaker = CircuitBreaker(failure_threshold=2, open_s=60.0)
    portfolio = Portfolio(
        [RelaxPolish(), Failing()],
        {BackendId.RELAX_POLISH: CircuitBreaker(), BackendId.ANNEAL: breaker},
    )
    for _ in range(2):
        final = (await _collect(portfolio, problem, 0.3))[-1]
        assert final.status in (Status.FEASIBLE, Status.OPTIMAL)
        failing = next(s for s in final.stats if s.backend is BackendId.ANNEAL)
        assert (failing.runs, failing.runs_failed) == (1, 1)
    assert breaker.state is CircuitState.OPEN
    final = (await _collect(portfolio, problem, 0.3))[-1]
    failing = next(s for s in final.stats if s.backend is BackendId.ANNEAL)
    assert failing.skipped and failing.skip_reason == "circuit breaker open"
    with pytest.raises(PreferenceError) as caught:
        await _collect(portfolio, problem, 0.3, preference=BackendId.ANNEAL)
    assert caught.value.unavailable


async def test_when_the_only_backend_fails_the_answer_is_no_solution() -> None:
    problem = from_proto(generated_problem(2, 8, 1))
    final = (await _collect(Portfolio([Failing()]), problem, 0.5))[-1]
    assert final.status is Status.NO_SOLUTION
    assert final.levels is None


async def test_an_infeasible_problem_ends_infeasible_naming_the_cap() -> None:
    message = generated_problem(2, 8, 1)
    for zone in message.zones:
        zone.power_levels_kw[0] = 0.5
    message.peak_power_cap_kw[3] = 0.7
    updates = await _collect(Portfolio([RelaxPolish(), Milp()]), from_proto(message), 0.5)
    assert len(updates) == 1
    assert updates[0].status is Status.INFEASIBLE
    assert updates[0].infeasibility is not None
    assert updates[0].infeasibility.constraint is Constraint.PEAK_POWER_CAP
    assert updates[0].infeasibility.step == 3


async def test_cancelling_a_solve_stops_every_backend_thread_and_process() -> None:
    problem = from_proto(generated_problem(10, 96, 1))
    before = set(threading.enumerate())
    stubborn = Stubborn()
    portfolio = Portfolio([RelaxPolish(), Isolated(Milp), stubborn])

    async def consume() -> None:
        async for _ in portfolio.solve(problem, 30.0):
            pass

    task = asyncio.create_task(consume())
    await asyncio.to_thread(stubborn.started.wait, 10)
    solver_threads = [t for t in threading.enumerate() if t.name.startswith("solver-")]
    assert len(solver_threads) == 3
    for _ in range(1000):  # the MILP child starts once relax-polish has a warm start
        if _solver_processes():
            break
        await asyncio.sleep(0.01)
    assert [p.name for p in _solver_processes()] == ["solver-milp"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not any(t.is_alive() for t in solver_threads)
    assert {t for t in threading.enumerate() if t.name.startswith("solver-")} <= before
    assert _solver_processes() == []


def _solver_processes() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("solver-")]


async def test_a_named_backend_runs_alone() -> None:
    problem = from_proto(generated_problem(3, 12, 1))
    final = (
        await _collect(Portfolio([RelaxPolish(), Milp()]), problem, 0.3, preference=BackendId.MILP)
    )[-1]
    by_backend = {s.backend: s for s in final.stats}
    assert by_backend[BackendId.RELAX_POLISH].skip_reason == "not the preferred backend"
    assert by_backend[BackendId.MILP].runs == 1
    assert final.backend is BackendId.MILP


def test_the_qpu_backend_is_configured_only_with_d_wave_credentials() -> None:
    from dwave.cloud.config import get_configfile_path

    from svc_optimizer.config import OptimizerConfig
    from svc_optimizer.service import default_backends

    if get_configfile_path() is not None:
        pytest.skip("a dwave configuration file exists on this machine")
    without = {b.id: b for b in default_backends(OptimizerConfig())}
    with_token = {b.id: b for b in default_backends(OptimizerConfig(dwave_token="t"))}
    assert not without[BackendId.QPU].configured()
    assert with_token[BackendId.QPU].configured()
    assert [b for b in without] == [
        BackendId.RELAX_POLISH,
        BackendId.MILP,
        BackendId.ANNEAL,
        BackendId.QPU,
    ]


async def test_a_met_gap_target_ends_the_solve_before_the_budget() -> None:
    problem = from_proto(generated_problem(3, 24, 1))
    updates = await _collect(Portfolio([RelaxPolish(), Milp()]), problem, 600.0, gap_target=0.5)
    final = updates[-1]
    assert final.status in (Status.FEASIBLE, Status.OPTIMAL)
    assert final.gap is not None and final.gap <= 0.5
    assert all(s.runs_timed_out == 0 for s in final.stats)
