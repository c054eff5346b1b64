"""The one evaluator of a schedule: its objective term by term, and its hard-constraint check.

Every schedule any backend proposes is scored here and nowhere else, so figures from different
backends compare exactly. A schedule is an integer array of level indices, shape (Z, T); the
batch functions accept any leading dimensions (..., Z, T).
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass

import numpy as np

from svc_optimizer.problem import NO_LEVEL, BoolArray, FloatArray, IntArray, Problem

CAP_TOLERANCE_KW = 1e-6
"""Power above the cap that still counts as within it (float rounding of sums)."""


@dataclass(frozen=True, slots=True)
class Breakdown:
    """The objective of one schedule; `total` is the value every backend minimises."""

    energy_cost: float
    energy_kwh: float
    discomfort_kelvin_hours: float
    discomfort_cost: float
    level_changes: int
    switching_cost: float
    total: float
    peak_power_kw: float


class Constraint(enum.Enum):
    """Hard constraints a schedule can break (mirrors the contract's `HardConstraint`)."""

    LEVELS = "levels"
    PEAK_POWER_CAP = "peak_power_cap"
    MIN_ON_STEPS = "min_on_steps"
    MIN_OFF_STEPS = "min_off_steps"


@dataclass(frozen=True, slots=True)
class Violation:
    """The first broken hard constraint of a schedule, or of a problem (see feasibility)."""

    constraint: Constraint
    step: int | None
    zones: tuple[int, ...]
    message: str


def temperatures(problem: Problem, power_kw: FloatArray) -> FloatArray:
    """T[k+1] for power (..., Z, T) by the zones' thermal models, same shape."""
    out = np.empty_like(power_kw, dtype=np.float64)
    t = np.broadcast_to(problem.initial_temperature_c, power_kw.shape[:-1]).astype(np.float64)
    drive = problem.c[:, None] * problem.outdoor_temperature_c[None, :] + problem.gain_c
    for k in range(problem.steps):
        t = problem.a * t + problem.b_c_per_kw * power_kw[..., k] + drive[:, k]
        out[..., k] = t
    return out


def level_changes(problem: Problem, levels: IntArray) -> IntArray:
    """Level changes per zone (..., Z), including a change from a set `initial_level`."""
    changes = np.count_nonzero(np.diff(levels, axis=-1), axis=-1)
    has_initial = problem.initial_level != NO_LEVEL
    first_changed = has_initial & (levels[..., 0] != problem.initial_level)
    return np.asarray(changes + first_changed, dtype=np.int64)


def totals(problem: Problem, levels: IntArray) -> FloatArray:
    """`total` of every schedule in a batch (..., Z, T) → (...)."""
    power = problem.power_kw(levels)
    h = problem.step_hours
    energy = h * np.einsum("...zt,t->...", power, problem.price_per_kwh)
    temps = temperatures(problem, power)
    outside = np.maximum(0.0, problem.lower_c - temps) + np.maximum(0.0, temps - problem.upper_c)
    discomfort = problem.discomfort_weight_per_kelvin_hour * h * outside.sum(axis=(-1, -2))
    switching = (level_changes(problem, levels) * problem.switching_penalty).sum(axis=-1)
    return np.asarray(energy + discomfort + switching, dtype=np.float64)


def evaluate(problem: Problem, levels: IntArray) -> Breakdown:
    """The objective of one schedule (Z, T), term by term."""
    power = problem.power_kw(levels)
    h = problem.step_hours
    temps = temperatures(problem, power)
    outside = np.maximum(0.0, problem.lower_c - temps) + np.maximum(0.0, temps - problem.upper_c)
    kelvin_hours = float(h * outside.sum())
    changes = level_changes(problem, levels)
    energy_cost = float(h * (power.sum(axis=0) * problem.price_per_kwh).sum())
    discomfort_cost = problem.discomfort_weight_per_kelvin_hour * kelvin_hours
    switching_cost = float((changes * problem.switching_penalty).sum())
    return Breakdown(
        energy_cost=energy_cost,
        energy_kwh=float(h * power.sum()),
        discomfort_kelvin_hours=kelvin_hours,
        discomfort_cost=discomfort_cost,
        level_changes=int(changes.sum()),
        switching_cost=switching_cost,
        total=energy_cost + discomfort_cost + switching_cost,
        peak_power_kw=float(power.sum(axis=0).max()),
    )


def on_states(problem: Problem, levels: IntArray) -> BoolArray:
    """Whether each zone is on (power above 0 kW) in each step."""
    return np.asarray(problem.power_kw(levels) > 0.0)


def initially_on(problem: Problem) -> BoolArray:
    """On/off state before the horizon; meaningful only where `initial_level` is set."""
    index = np.maximum(problem.initial_level, 0)
    return np.asarray(problem.levels_kw[np.arange(problem.zones), index] > 0.0)


def min_run_violation(problem: Problem, zone: int, on: BoolArray) -> Violation | None:
    """The first run of zone `zone`'s on/off row `on` (T,) shorter than its minimum, if any."""
    steps = on.shape[0]
    min_on = int(problem.min_on_steps[zone])
    min_off = int(problem.min_off_steps[zone]) if problem.can_switch_off[zone] else 0
    if min_on <= 1 and min_off <= 1:
        return None
    # Minimum times of 0 and 1 impose nothing.
    min_on, min_off = (m if m > 1 else 0 for m in (min_on, min_off))
    starts = np.flatnonzero(np.diff(on.astype(np.int8))) + 1
    bounds = [0, *starts.tolist(), steps]
    has_initial = problem.initial_level[zone] != NO_LEVEL
    if has_initial and bool(initially_on(problem)[zone]) != bool(on[0]):
        # The run before the horizon ends at step 0: it must have lasted its minimum.
        before_on = bool(initially_on(problem)[zone])
        if int(problem.initial_state_steps[zone]) < (min_on if before_on else min_off):
            return Violation(
                Constraint.MIN_ON_STEPS if before_on else Constraint.MIN_OFF_STEPS,
                0,
                (zone,),
                f"zone {problem.zone_ids[zone]} switches {'off' if before_on else 'on'} at "
                f"step 0 after {problem.initial_state_steps[zone]} steps "
                f"{'on' if before_on else 'off'} before the horizon, below its minimum",
            )
    for start, end in itertools.pairwise(bounds):
        state = bool(on[start])
        needed = min_on if state else min_off
        if start == 0:
            if not has_initial:
                continue
            if bool(initially_on(problem)[zone]) == state:
                needed -= int(problem.initial_state_steps[zone])
        if end - start < min(needed, steps - start):
            constraint = Constraint.MIN_ON_STEPS if state else Constraint.MIN_OFF_STEPS
            word = "on" if state else "off"
            return Violation(
                constraint,
                end,
                (zone,),
                f"zone {problem.zone_ids[zone]} switches {'off' if state else 'on'} at step "
                f"{end} after {end - start} steps {word}, below its minimum",
            )
    return None


def violation(problem: Problem, levels: IntArray) -> Violation | None:
    """The first hard constraint schedule `levels` (Z, T) breaks, or None when it is feasible."""
    if levels.shape != (problem.zones, problem.steps):
        return Violation(Constraint.LEVELS, None, (), f"schedule has shape {levels.shape}")
    bad = (levels < 0) | (levels >= problem.level_count[:, None])
    if bad.any():
        z, k = (int(i) for i in np.argwhere(bad)[0])
        return Violation(Constraint.LEVELS, k, (z,), f"level index out of range at step {k}")
    total_kw = problem.power_kw(levels).sum(axis=0)
    over = np.flatnonzero(total_kw > problem.peak_power_cap_kw + CAP_TOLERANCE_KW)
    if over.size:
        k = int(over[0])
        return Violation(
            Constraint.PEAK_POWER_CAP,
            k,
            (),
            f"total power {total_kw[k]:g} kW exceeds peak_power_cap_kw[{k}] = "
            f"{problem.peak_power_cap_kw[k]:g} kW",
        )
    on = on_states(problem, levels)
    for z in range(problem.zones):
        found = min_run_violation(problem, z, on[z])
        if found is not None:
            return found
    return None
