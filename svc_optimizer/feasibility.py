"""Whether a problem has any feasible schedule, and the constraint that rules it out if not.

The check is exact: with each zone at its lowest allowed level in every step (the lowest
positive level while the initial state forces it on), every minimum on/off time holds, so a
problem is feasible exactly when that lowest power fits under the cap in every step.
"""

from __future__ import annotations

import numpy as np

from svc_optimizer.evaluate import CAP_TOLERANCE_KW, Constraint, Violation, initially_on
from svc_optimizer.problem import NO_LEVEL, FloatArray, IntArray, Problem


def lowest_positive_index(problem: Problem) -> IntArray:
    """Index of each zone's lowest level above 0 kW (1 where level 0 is off, else 0)."""
    return np.where(problem.can_switch_off, 1, 0).astype(np.int64)


def forced_steps(problem: Problem) -> tuple[IntArray, IntArray]:
    """Steps at the start of the horizon each zone must stay (on, off) by its initial state."""
    has_initial = (problem.initial_level != NO_LEVEL) & problem.can_switch_off
    on = initially_on(problem)
    elapsed = problem.initial_state_steps
    # Minimum times of 0 and 1 impose nothing (the contract's words), whatever has elapsed.
    min_on = np.where(problem.min_on_steps > 1, problem.min_on_steps, 0)
    min_off = np.where(problem.min_off_steps > 1, problem.min_off_steps, 0)
    on_left = np.where(has_initial & on, np.maximum(min_on - elapsed, 0), 0)
    off_left = np.where(has_initial & ~on, np.maximum(min_off - elapsed, 0), 0)
    horizon = problem.steps
    return np.minimum(on_left, horizon), np.minimum(off_left, horizon)


def lowest_schedule(problem: Problem) -> IntArray:
    """Every zone at its lowest allowed level: feasible whenever the problem is."""
    on_left, _ = forced_steps(problem)
    levels = np.zeros((problem.zones, problem.steps), dtype=np.int64)
    step = np.arange(problem.steps)[None, :]
    forced = step < on_left[:, None]
    return np.where(forced, lowest_positive_index(problem)[:, None], levels)


def lowest_power_kw(problem: Problem) -> FloatArray:
    """Per zone and step, the least power any feasible schedule can draw (Z, T)."""
    return problem.power_kw(lowest_schedule(problem))


def infeasibility(problem: Problem) -> Violation | None:
    """Why no schedule can meet the hard constraints, or None when one can."""
    lowest = lowest_power_kw(problem)
    total = lowest.sum(axis=0)
    over = np.flatnonzero(total > problem.peak_power_cap_kw + CAP_TOLERANCE_KW)
    if over.size == 0:
        return None
    k = int(over[0])
    cap = problem.peak_power_cap_kw[k]
    base = problem.lowest_kw.sum()
    if base > cap + CAP_TOLERANCE_KW:
        return Violation(
            Constraint.PEAK_POWER_CAP,
            k,
            (),
            f"peak_power_cap_kw[{k}] = {cap:g} kW is below {base:g} kW, "
            "the sum of the zones' lowest levels",
        )
    held_on = tuple(int(z) for z in np.flatnonzero(lowest[:, k] > problem.lowest_kw))
    names = ", ".join(problem.zone_ids[z] for z in held_on)
    return Violation(
        Constraint.MIN_ON_STEPS,
        k,
        held_on,
        f"zones {names} must stay on at step {k} (min_on_steps), which needs {total[k]:g} kW "
        f"with the other zones at their lowest levels, above peak_power_cap_kw[{k}] = {cap:g} kW",
    )
