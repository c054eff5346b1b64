"""Repair: turn any level array into a schedule that meets every hard constraint.

One forward pass over the steps. Each zone takes the level nearest its wanted power plus the heat
it is still owed from earlier steps (error diffusion, decayed by the zone's `a`), unless a
minimum on/off time forbids it; a zone may switch on only if its lowest positive level fits
under the cap for its whole minimum on-time, given what the other zones are already committed
to; then, while a step is over the cap, the zone whose power costs the most at the margin steps
down one level. On a feasible problem the result is always feasible (the committed power never
exceeds the cap).
"""

from __future__ import annotations

import numpy as np

from svc_optimizer.evaluate import CAP_TOLERANCE_KW, initially_on, temperatures
from svc_optimizer.feasibility import forced_steps, lowest_positive_index, lowest_power_kw
from svc_optimizer.problem import NO_LEVEL, FloatArray, IntArray, Problem


class RepairError(RuntimeError):
    """The problem is infeasible, so no repair exists (check `feasibility` first)."""


def power_gradient(problem: Problem, levels: IntArray) -> FloatArray:
    """d total / d power[z, k] at `levels`, ignoring switching (Z, T), currency per kW."""
    power = problem.power_kw(levels)
    temps = temperatures(problem, power)
    slope = np.where(temps < problem.lower_c, -1.0, 0.0) + np.where(
        temps > problem.upper_c, 1.0, 0.0
    )
    acc = np.zeros(problem.zones)
    future = np.empty_like(slope)
    for k in range(problem.steps - 1, -1, -1):
        acc = slope[:, k] + problem.a * acc
        future[:, k] = acc
    h = problem.step_hours
    comfort = problem.discomfort_weight_per_kelvin_hour * h * problem.b_c_per_kw[:, None] * future
    return np.asarray(problem.price_per_kwh[None, :] * h + comfort)


def repair(problem: Problem, wanted: IntArray) -> IntArray:
    """A feasible schedule close to level indices `wanted` (Z, T); unchanged if feasible."""
    wanted = np.clip(wanted, 0, problem.level_count[:, None] - 1)
    return repair_power(problem, problem.power_kw(wanted), power_gradient(problem, wanted))


def repair_power(problem: Problem, wanted_kw: FloatArray, gradient: FloatArray) -> IntArray:
    """A feasible schedule tracking power `wanted_kw` (Z, T); raises RepairError if infeasible.

    `gradient` (Z, T) ranks which zone steps down first where the cap binds (highest first).
    """
    zones, steps = problem.zones, problem.steps
    cap = problem.peak_power_cap_kw + CAP_TOLERANCE_KW
    committed = lowest_power_kw(problem)  # least power each zone is bound to draw
    committed_total = committed.sum(axis=0)
    if np.any(committed_total > cap):
        raise RepairError("the lowest allowed levels exceed the cap")
    positive = lowest_positive_index(problem)
    positive_kw = problem.levels_kw[np.arange(zones), positive]
    switchable = problem.can_switch_off & ((problem.min_on_steps > 1) | (problem.min_off_steps > 1))
    on_left, off_left = forced_steps(problem)
    has_initial = problem.initial_level != NO_LEVEL
    was_on = np.where(has_initial, initially_on(problem), False)
    out = np.empty((zones, steps), dtype=np.int64)
    owed_kw = np.zeros(zones)
    for k in range(steps):
        target = wanted_kw[:, k] + owed_kw
        level = np.argmin(np.abs(problem.levels_kw - target[:, None]), axis=1)
        must_on = on_left > 0
        must_off = off_left > 0
        level = np.where(must_on & (level < positive), positive, level)
        level = np.where(must_off, 0, level)
        floor = np.where(must_on, positive, 0)
        for z in np.flatnonzero(switchable & (level > 0) & ~was_on & ((k > 0) | has_initial)):
            window = slice(k, min(k + max(int(problem.min_on_steps[z]), 1), steps))
            extra = np.maximum(positive_kw[z] - committed[z, window], 0.0)
            if np.any(committed_total[window] + extra > cap[window]):
                level[z] = 0  # switching on now would break the cap later in its on-time
                continue
            # Commit at once, so the next zone's check sees this one's on-time.
            committed[z, window] += extra
            committed_total[window] += extra
            floor[z] = positive[z]
        power = problem.levels_kw[np.arange(zones), level]
        total = float(power.sum())
        while total > cap[k]:
            movable = np.flatnonzero(level > floor)
            if movable.size == 0:
                raise RepairError(f"cannot meet the cap at step {k}")
            down = int(movable[np.argmax(gradient[movable, k])])
            level[down] -= 1
            total += float(problem.levels_kw[down, level[down]] - power[down])
            power[down] = problem.levels_kw[down, level[down]]
        out[:, k] = level
        owed_kw = problem.a * (target - power)
        on = power > 0.0
        switched_on = switchable & on & ~was_on & ((k > 0) | has_initial)
        for z in np.flatnonzero(switched_on):
            window = slice(k + 1, min(k + int(problem.min_on_steps[z]), steps))
            raise_to = np.maximum(committed[z, window], positive_kw[z])
            committed_total[window] += raise_to - committed[z, window]
            committed[z, window] = raise_to
        changed = on != was_on
        started = changed & ((k > 0) | has_initial)
        on_left = np.where(
            started & on, problem.min_on_steps - 1, np.where(changed, 0, np.maximum(on_left - 1, 0))
        )
        off_left = np.where(
            started & ~on & problem.can_switch_off,
            problem.min_off_steps - 1,
            np.where(changed, 0, np.maximum(off_left - 1, 0)),
        )
        was_on = on
    return out
