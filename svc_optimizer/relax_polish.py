"""Backend `relax-polish`: LP relaxation → rounding with error diffusion and cap repair → polish.

The fast default. It proposes a myopic (thermostat-like) schedule within milliseconds, solves
the LP relaxation without the switching penalty (5-10x faster than with it, and its rounding
polishes as well) for a trajectory and a first bound, proposes the repaired rounding, then the
polished schedule as it improves; with time left, the full LP for a tighter bound, two other
roundings of the LP, then iterated local search from the best schedule so far. Without an LP
solution (interrupted, or too little time), it polishes the myopic schedule instead.
"""

from __future__ import annotations

import contextlib

import numpy as np

from svc_optimizer.backends import BackendId, Run
from svc_optimizer.evaluate import evaluate
from svc_optimizer.polish import polish
from svc_optimizer.problem import FloatArray, IntArray, Problem
from svc_optimizer.relax import RelaxationError, solve_relaxation
from svc_optimizer.repair import repair, repair_power

PERTURB_STEPS = (4, 16)
"""Shortest and longest stretch of one zone that iterated local search scrambles."""


class RelaxPolish:
    id = BackendId.RELAX_POLISH
    description = "HiGHS LP relaxation, rounding, peak-cap repair and local search"
    min_budget_s = 0.0
    max_zone_steps = 20_000
    reports_lower_bound = True

    def configured(self) -> bool:
        return True

    def run(self, problem: Problem, run: Run) -> None:
        # A myopic schedule first: feasible within milliseconds, whatever the LP then takes.
        gradient = np.broadcast_to(problem.price_per_kwh, (problem.zones, problem.steps))
        first = repair_power(problem, myopic_power_kw(problem), gradient)
        run.propose(first)
        try:
            # The LP without the switching penalty is 5-10x faster and rounds as well.
            relaxation = solve_relaxation(problem, run.remaining_s(), run.stop, switching=False)
        except RelaxationError:
            if run.should_stop():
                return
            run.propose(polish(problem, first, run.should_stop, run.propose))
            return
        run.bound(relaxation.lower_bound)
        # Where the cap binds, step down first where energy is dearest: the owed heat is then
        # delivered later by error diffusion.
        start = repair_power(problem, relaxation.power_kw, gradient)
        run.propose(start)
        run.propose(polish(problem, start, run.should_stop, run.propose))
        if run.should_stop():
            return
        # Time left: the full LP's tighter bound (after the polish, not beside it: on two cores
        # the MILP process already takes the other one).
        with contextlib.suppress(RelaxationError):
            run.bound(solve_relaxation(problem, run.remaining_s(), run.stop).lower_bound)
        # Other roundings of the same LP lead to other local optima. Rounding to the nearest
        # level keeps flat stretches flat; diffusion from a smoothed trajectory too.
        power_kw = relaxation.power_kw
        nearest = np.argmin(np.abs(problem.levels_kw[:, None, :] - power_kw[:, :, None]), axis=2)
        smoothed = np.apply_along_axis(
            lambda row: np.convolve(row, np.full(4, 0.25), mode="same"), 1, power_kw
        )
        for other in (problem.power_kw(nearest), smoothed):
            if run.should_stop():
                return
            start = repair_power(problem, other, gradient)
            polished = polish(problem, start, run.should_stop, run.propose)
            run.propose(polished)
        best = run.best()
        if best is not None:
            perturb_and_polish(problem, best, run)


def perturb_and_polish(problem: Problem, start: IntArray, run: Run) -> None:
    """Iterated local search until the run stops: scramble a few hours of one zone, repair,
    re-polish that zone, keep the result when the true total drops."""
    rng = np.random.default_rng(0)
    best, best_total = start, evaluate(problem, start).total
    while not run.should_stop():
        candidate = best.copy()
        zone = int(rng.integers(problem.zones))
        first = int(rng.integers(problem.steps))
        length = int(rng.integers(PERTURB_STEPS[0], PERTURB_STEPS[1] + 1))
        window = slice(first, min(first + length, problem.steps))
        count = int(problem.level_count[zone])
        candidate[zone, window] = rng.integers(0, count, window.stop - window.start)
        candidate = repair(problem, candidate)
        touched = np.flatnonzero(np.any(candidate != best, axis=1))
        candidate = polish(problem, candidate, run.should_stop, zones=touched.tolist())
        total = evaluate(problem, candidate).total
        if total < best_total - 1e-9:
            best, best_total = candidate, total
            run.propose(best)


def myopic_power_kw(problem: Problem) -> FloatArray:
    """Per step, each zone's level that is cheapest for that step alone (energy plus the
    discomfort at its end), like a thermostat that never looks ahead."""
    h = problem.step_hours
    levels = np.where(np.isfinite(problem.levels_kw), problem.levels_kw, np.nan)
    drive = problem.c[:, None] * problem.outdoor_temperature_c[None, :] + problem.gain_c
    temp = problem.initial_temperature_c.copy()
    out = np.empty((problem.zones, problem.steps))
    zone = np.arange(problem.zones)
    for k in range(problem.steps):
        reached = (problem.a * temp + drive[:, k])[:, None] + problem.b_c_per_kw[:, None] * levels
        outside = np.maximum(0.0, problem.lower_c[:, k, None] - reached) + np.maximum(
            0.0, reached - problem.upper_c[:, k, None]
        )
        cost = problem.price_per_kwh[k] * h * levels
        cost = cost + problem.discomfort_weight_per_kelvin_hour * h * outside
        choice = np.nanargmin(cost, axis=1)
        out[:, k] = levels[zone, choice]
        temp = reached[zone, choice]
    return out
