"""The models handed to solvers say what the evaluator says: MILP/CQM exactly, BQM by design."""

from __future__ import annotations

import threading
from collections.abc import Hashable

import numpy as np
import pytest

from svc_optimizer.bqm import build_bqm, decode, encoding
from svc_optimizer.breaker import CircuitBreaker, CircuitState
from svc_optimizer.cqm import build_cqm, decode_cqm
from svc_optimizer.evaluate import evaluate, temperatures, violation
from svc_optimizer.feasibility import lowest_schedule
from svc_optimizer.instances import generated_problem
from svc_optimizer.problem import IntArray, Problem, from_proto
from svc_optimizer.relax import solve_relaxation
from svc_optimizer.repair import repair


def _random_feasible(problem: Problem, seed: int) -> IntArray:
    rng = np.random.default_rng(seed)
    wanted = rng.integers(0, problem.level_count[:, None], (problem.zones, problem.steps))
    return repair(problem, wanted)


@pytest.mark.parametrize("equally_spaced", [True, False])
def test_the_cqm_objective_equals_the_evaluator_on_feasible_schedules(
    equally_spaced: bool,
) -> None:
    message = generated_problem(
        3, 8, 4, levels=4, min_on_steps=2, min_off_steps=2, equally_spaced=equally_spaced
    )
    message.zones[1].initial_level_index = 2
    problem = from_proto(message)
    cqm, model = build_cqm(problem)
    discrete = sum(1 for label in cqm.constraints if cqm.constraints[label].lhs.is_discrete())
    assert discrete == (0 if equally_spaced else 3 * 8)  # one per zone and step
    for seed in range(5):
        levels = _random_feasible(problem, seed)
        sample: dict[Hashable, float] = dict(enumerate(model.encode(problem, levels).tolist()))
        assert cqm.check_feasible(sample, atol=1e-6)
        assert cqm.objective.energy(sample) == pytest.approx(evaluate(problem, levels).total)
        assert np.array_equal(decode_cqm(model, sample), levels)


def test_the_cqm_rejects_a_schedule_over_the_cap() -> None:
    problem = from_proto(generated_problem(3, 8, 4, cap_fraction=0.5))
    cqm, model = build_cqm(problem)
    highest = (problem.level_count[:, None] - 1) * np.ones((1, problem.steps), dtype=np.int64)
    assert violation(problem, highest) is not None
    assert not cqm.check_feasible(dict(enumerate(model.encode(problem, highest).tolist())))


@pytest.mark.parametrize("equally_spaced", [True, False])
def test_the_bqm_energy_is_cost_plus_pull_to_the_lp_trajectory_plus_switching(
    equally_spaced: bool,
) -> None:
    problem = from_proto(generated_problem(2, 12, 6, equally_spaced=equally_spaced))
    relaxation = solve_relaxation(problem, 5.0, threading.Event())
    bqm, enc = build_bqm(problem, relaxation.temperature_c, comfort_weight=0.7)
    for seed in range(4):
        levels = _random_feasible(problem, seed)
        bits = _encode(problem, levels)
        assert np.array_equal(decode(problem, enc, bits), levels)
        power = problem.power_kw(levels)
        expected = float((power.sum(axis=0) * problem.price_per_kwh).sum() * problem.step_hours)
        expected += 0.7 * float(
            ((temperatures(problem, power) - relaxation.temperature_c) ** 2).sum()
        )
        for z in range(problem.zones):
            kw = problem.levels_kw[z, : problem.level_count[z]]
            spacing = float(np.mean(np.diff(kw)))
            step_changes = np.diff(power[z]) / spacing
            expected += problem.switching_penalty[z] * float((step_changes**2).sum())
        sample = dict(enumerate(bits.tolist()))
        assert bqm.energy(sample) == pytest.approx(expected, rel=1e-9)


def _encode(problem: Problem, levels: IntArray) -> IntArray:
    enc = encoding(problem)
    bits = np.zeros(enc.variables, dtype=np.int64)
    for z in range(problem.zones):
        width = int(enc.bits_per_step[z])
        for k in range(problem.steps):
            at = int(enc.offsets[z]) + k * width
            if enc.log_encoded[z]:
                bits[at : at + width] = [(int(levels[z, k]) >> i) & 1 for i in range(width)]
            else:
                bits[at : at + int(levels[z, k])] = 1
    return bits


def test_a_broken_domain_wall_costs_more_than_any_intact_one() -> None:
    problem = from_proto(generated_problem(1, 4, 6, levels=4, equally_spaced=False))
    relaxation = solve_relaxation(problem, 5.0, threading.Event())
    bqm, enc = build_bqm(problem, relaxation.temperature_c)
    assert not enc.log_encoded[0]
    intact = _encode(problem, lowest_schedule(problem))
    broken = intact.copy()
    broken[1] = 1  # second bit set without the first
    assert bqm.energy(dict(enumerate(broken.tolist()))) > bqm.energy(
        dict(enumerate(intact.tolist()))
    )


def test_the_breaker_opens_after_repeated_failures_and_probes_once_later() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, open_s=10.0, clock=lambda: now[0])

    def state() -> CircuitState:
        return breaker.state

    assert breaker.allow()
    breaker.record(False)
    assert state() is CircuitState.CLOSED
    breaker.record(False)
    assert state() is CircuitState.OPEN and not breaker.allow()
    assert breaker.half_open_in_s() == pytest.approx(10.0)
    now[0] = 10.0
    assert state() is CircuitState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.record(False)
    assert state() is CircuitState.OPEN
    now[0] = 20.0
    assert breaker.allow()
    breaker.record(True)
    assert state() is CircuitState.CLOSED and breaker.allow()
