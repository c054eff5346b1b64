"""The one evaluator, the feasibility check, repair and polish, against plain reference code."""

from __future__ import annotations

import itertools
import threading

import highspy
import numpy as np
import pytest
from google.protobuf import duration_pb2
from hvac.common.v1.common_pb2 import ComfortBand
from hvac.optimizer.v1 import schedule_problem_pb2 as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svc_optimizer.evaluate import Constraint, evaluate, totals, violation
from svc_optimizer.feasibility import infeasibility, lowest_schedule
from svc_optimizer.formulation import build
from svc_optimizer.highs import solver
from svc_optimizer.polish import polish
from svc_optimizer.problem import Problem, from_proto
from svc_optimizer.repair import repair


@st.composite
def zone_problems(draw: st.DrawFn, steps: int, index: int) -> sp.ZoneProblem:
    count = draw(st.integers(2, 4))
    first = draw(st.sampled_from([0.0, 0.5]))
    gaps = draw(st.lists(st.floats(0.2, 3.0), min_size=count - 1, max_size=count - 1))
    levels = [first]
    for gap in gaps:
        levels.append(round(levels[-1] + gap, 3))
    lowers = draw(st.lists(st.floats(15.0, 21.0), min_size=steps, max_size=steps))
    zone = sp.ZoneProblem(
        zone_id=f"z{index}",
        a=draw(st.floats(0.5, 1.0)),
        b_c_per_kw=draw(st.floats(-1.0, 2.0)),
        c=draw(st.floats(0.0, 0.5)),
        initial_temperature_c=draw(st.floats(10.0, 25.0)),
        comfort=[ComfortBand(lower_c=lo, upper_c=lo + 3.0) for lo in lowers],
        gain_c=draw(st.lists(st.floats(-1.0, 1.0), min_size=steps, max_size=steps)),
        power_levels_kw=levels,
        min_on_steps=draw(st.integers(0, 3)),
        min_off_steps=draw(st.integers(0, 3)),
        switching_penalty=draw(st.floats(0.0, 0.5)),
    )
    if draw(st.booleans()):
        zone.initial_level_index = draw(st.integers(0, count - 1))
        if draw(st.booleans()):
            zone.initial_state_steps = draw(st.integers(0, 4))
    return zone


@st.composite
def schedule_problems(
    draw: st.DrawFn, max_zones: int = 3, max_steps: int = 6
) -> sp.ScheduleProblem:
    zones = draw(st.integers(1, max_zones))
    steps = draw(st.integers(1, max_steps))
    zone_messages = [draw(zone_problems(steps, i)) for i in range(zones)]
    most = sum(z.power_levels_kw[-1] for z in zone_messages)
    caps = draw(st.lists(st.floats(0.0, most + 1.0), min_size=steps, max_size=steps))
    return sp.ScheduleProblem(
        step=duration_pb2.Duration(seconds=draw(st.sampled_from([300, 900, 3600]))),
        horizon_steps=steps,
        zones=zone_messages,
        outdoor_temperature_c=draw(st.lists(st.floats(-10, 20), min_size=steps, max_size=steps)),
        price_per_kwh=draw(st.lists(st.floats(-0.1, 0.5), min_size=steps, max_size=steps)),
        peak_power_cap_kw=caps,
        discomfort_weight_per_kelvin_hour=draw(st.floats(0.0, 5.0)),
    )


def reference_total(message: sp.ScheduleProblem, levels: list[list[int]]) -> float:
    """The contract's objective, written out step by step with plain floats."""
    h = message.step.seconds / 3600.0
    total = 0.0
    for z, zone in enumerate(message.zones):
        temp = zone.initial_temperature_c
        previous = zone.initial_level_index if zone.HasField("initial_level_index") else None
        for k in range(message.horizon_steps):
            level = levels[z][k]
            power = zone.power_levels_kw[level]
            total += message.price_per_kwh[k] * power * h
            temp = zone.a * temp + zone.b_c_per_kw * power
            temp += zone.c * message.outdoor_temperature_c[k] + zone.gain_c[k]
            band = zone.comfort[k]
            outside = max(0.0, band.lower_c - temp) + max(0.0, temp - band.upper_c)
            total += message.discomfort_weight_per_kelvin_hour * h * outside
            if previous is not None and previous != level:
                total += zone.switching_penalty
            previous = level
    return total


def reference_feasible(message: sp.ScheduleProblem, levels: list[list[int]]) -> bool:
    """Cap and minimum on/off times checked run by run, directly from the contract's words."""
    steps = message.horizon_steps
    for k in range(steps):
        used = sum(z.power_levels_kw[levels[i][k]] for i, z in enumerate(message.zones))
        if used > message.peak_power_cap_kw[k] + 1e-6:
            return False
    for i, zone in enumerate(message.zones):
        if zone.power_levels_kw[0] > 0:
            continue  # never off, so no on/off constraint bites
        on = [zone.power_levels_kw[level] > 0 for level in levels[i]]
        has_initial = zone.HasField("initial_level_index")
        before = zone.power_levels_kw[zone.initial_level_index] > 0 if has_initial else None
        elapsed = zone.initial_state_steps if zone.HasField("initial_state_steps") else 10**9
        min_on = zone.min_on_steps if zone.min_on_steps > 1 else 0
        min_off = zone.min_off_steps if zone.min_off_steps > 1 else 0
        if has_initial and before != on[0] and elapsed < (min_on if before else min_off):
            return False  # the state held before the horizon ended too early
        k = 0
        while k < steps:
            end = k
            while end < steps and on[end] == on[k]:
                end += 1
            minimum = min_on if on[k] else min_off
            if k == 0:
                if not has_initial:
                    k = end
                    continue
                if before == on[0]:
                    minimum -= elapsed
            if end - k < min(minimum, steps - k):
                return False
            k = end
    return True


def _schedules(message: sp.ScheduleProblem, data: st.DataObject) -> list[list[int]]:
    return [
        data.draw(
            st.lists(
                st.integers(0, len(z.power_levels_kw) - 1),
                min_size=message.horizon_steps,
                max_size=message.horizon_steps,
            )
        )
        for z in message.zones
    ]


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(schedule_problems(), st.data())
def test_evaluator_total_matches_a_step_by_step_reference(
    message: sp.ScheduleProblem, data: st.DataObject
) -> None:
    levels = _schedules(message, data)
    problem = from_proto(message)
    breakdown = evaluate(problem, np.array(levels))
    expected = reference_total(message, levels)
    assert breakdown.total == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert float(totals(problem, np.array(levels))) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    parts = breakdown.energy_cost + breakdown.discomfort_cost + breakdown.switching_cost
    assert breakdown.total == pytest.approx(parts)


@PROPERTY
@given(schedule_problems(), st.data())
def test_violation_agrees_with_a_run_by_run_reference(
    message: sp.ScheduleProblem, data: st.DataObject
) -> None:
    levels = _schedules(message, data)
    found = violation(from_proto(message), np.array(levels))
    assert (found is None) == reference_feasible(message, levels)


@PROPERTY
@given(schedule_problems(), st.data())
def test_repair_returns_a_feasible_schedule_exactly_when_the_problem_is_feasible(
    message: sp.ScheduleProblem, data: st.DataObject
) -> None:
    problem = from_proto(message)
    if infeasibility(problem) is not None:
        assert violation(problem, lowest_schedule(problem)) is not None
        return
    repaired = repair(problem, np.array(_schedules(message, data)))
    assert violation(problem, repaired) is None


@PROPERTY
@given(schedule_problems(), st.data())
def test_repair_leaves_a_feasible_schedule_unchanged(
    message: sp.ScheduleProblem, data: st.DataObject
) -> None:
    problem = from_proto(message)
    levels = np.array(_schedules(message, data))
    if violation(problem, levels) is None:
        assert np.array_equal(repair(problem, levels), levels)


@PROPERTY
@given(schedule_problems(), st.data())
def test_polish_keeps_feasibility_and_never_raises_the_total(
    message: sp.ScheduleProblem, data: st.DataObject
) -> None:
    problem = from_proto(message)
    if infeasibility(problem) is not None:
        return
    start = repair(problem, np.array(_schedules(message, data)))
    polished = polish(problem, start, lambda: False)
    assert violation(problem, polished) is None
    assert evaluate(problem, polished).total <= evaluate(problem, start).total + 1e-12


def _two_zone_problem(cap_kw: float, min_on: int = 0) -> Problem:
    band = ComfortBand(lower_c=20, upper_c=24)
    zones = [
        sp.ZoneProblem(
            zone_id=f"z{i}",
            a=0.9,
            b_c_per_kw=0.5,
            c=0.1,
            initial_temperature_c=20,
            comfort=[band] * 4,
            gain_c=[0.0] * 4,
            power_levels_kw=[0.0, 1.5, 3.0],
            min_on_steps=min_on,
            initial_level_index=1,
            initial_state_steps=0,
        )
        for i in range(2)
    ]
    return from_proto(
        sp.ScheduleProblem(
            step=duration_pb2.Duration(seconds=900),
            horizon_steps=4,
            zones=zones,
            outdoor_temperature_c=[5.0] * 4,
            price_per_kwh=[0.1] * 4,
            peak_power_cap_kw=[6.0, cap_kw, 6.0, 6.0],
            discomfort_weight_per_kelvin_hour=1.0,
        )
    )


def test_zones_held_on_by_their_minimum_on_time_make_a_low_cap_infeasible() -> None:
    problem = _two_zone_problem(cap_kw=0.0)
    assert infeasibility(problem) is None  # both zones may switch off at step 1
    zones_on_for_two_steps = _two_zone_problem(cap_kw=2.0, min_on=3)
    reason = infeasibility(zones_on_for_two_steps)
    assert reason is not None
    assert reason.constraint is Constraint.MIN_ON_STEPS
    assert reason.step == 1
    assert reason.zones == (0, 1)


def test_cap_violation_names_the_first_step_over_the_cap() -> None:
    problem = _two_zone_problem(cap_kw=4.0)
    levels = np.array([[1, 2, 2, 0], [1, 2, 0, 0]])
    found = violation(problem, levels)
    assert found is not None
    assert found.constraint is Constraint.PEAK_POWER_CAP
    assert found.step == 1


def test_brute_force_enumeration_scores_by_the_evaluator_batch() -> None:
    problem = _two_zone_problem(cap_kw=3.0)
    grid = np.array(list(itertools.product(range(3), repeat=8))).reshape(-1, 2, 4)
    batch = totals(problem, grid)
    for i in (0, 17, len(grid) - 1):
        assert batch[i] == pytest.approx(evaluate(problem, grid[i]).total)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule_problems(max_zones=2, max_steps=4))
def test_the_milp_optimum_equals_exhaustive_search(message: sp.ScheduleProblem) -> None:
    problem = from_proto(message)
    choices = [range(int(n)) for n in problem.level_count]
    grid = itertools.product(*[c for c in choices for _ in range(problem.steps)])
    feasible = [
        levels
        for levels in (np.array(g).reshape(problem.zones, problem.steps) for g in grid)
        if violation(problem, levels) is None
    ]
    model = build(problem, integer=True)
    h = solver(model, 30.0, threading.Event())
    h.setOptionValue("mip_rel_gap", 0.0)
    h.run()
    if not feasible:
        assert infeasibility(problem) is not None
        assert h.getModelStatus() == highspy.HighsModelStatus.kInfeasible
        return
    assert infeasibility(problem) is None
    best = float(totals(problem, np.stack(feasible)).min())
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    found = model.decode(np.asarray(h.getSolution().col_value))
    assert violation(problem, found) is None
    assert evaluate(problem, found).total == pytest.approx(best, rel=1e-6, abs=1e-6)


@PROPERTY
@given(schedule_problems(max_zones=2, max_steps=14), st.data())
def test_polish_scores_moves_in_batch_exactly_as_row_by_row(
    message: sp.ScheduleProblem, data: st.DataObject
) -> None:
    from svc_optimizer import polish as local_search

    problem = from_proto(message)
    if infeasibility(problem) is not None:
        return
    levels = repair(problem, np.array(_schedules(message, data)))
    state = local_search._State(problem, levels)
    for z, zone in enumerate(state.zones):
        moves = local_search._concat(
            local_search._runs(zone, problem.steps, (1, *local_search.BLOCK_STEPS)),
            local_search._shifts(zone, levels[z]),
        )
        if moves.start.shape[0] == 0:
            continue
        rows = np.stack([moves.row(i, levels[z]) for i in range(moves.start.shape[0])])
        exact = local_search._costs(zone, rows)
        assert np.allclose(state._move_costs(z, moves), exact, rtol=1e-9, atol=1e-9)
        kept = state._fitting(z, moves)
        assert kept.start.shape[0] == int(state.fits(z, rows).sum())
