"""Local search on the true objective: the finishing step every backend shares.

The objective is a sum over zones; only the peak cap couples them. So the search improves one
zone at a time, scoring whole batches of candidate rows at once (one matrix product gives their
temperature trajectories): single-step level changes, and shifts of heat between two steps a few
hours apart. When the cap binds, it trades a level between two zones in the same step. Every
accepted move keeps the schedule feasible and strictly lowers the evaluator's total.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from svc_optimizer.evaluate import CAP_TOLERANCE_KW, min_run_violation
from svc_optimizer.problem import NO_LEVEL, BoolArray, FloatArray, IntArray, Problem

SHIFT_WINDOW_STEPS = 12
"""How far apart (in steps) a shift move may move heat; 3 hours at 15-minute steps."""
IMPROVEMENT = 1e-9
"""A move must lower the total by more than this to count."""
TOP_MOVES = 24
"""Moves re-checked one by one after each batch scoring, best first."""


@dataclass(frozen=True)
class _Zone:
    kw: FloatArray  # (L,)
    count: int
    influence: FloatArray  # (T, T): temperature at end of step j per kW in step k
    free_c: FloatArray  # (T,)
    lower_c: FloatArray
    upper_c: FloatArray
    price_h: FloatArray
    weight_h: float
    penalty: float
    initial: int
    min_times: bool


def _zone(problem: Problem, z: int) -> _Zone:
    steps = problem.steps
    k = np.arange(steps)
    lag = k[None, :] - k[:, None]
    powers = problem.decay_powers[z][np.clip(lag, 0, steps)]
    influence = np.where(lag >= 0, problem.b_c_per_kw[z] * powers, 0.0)
    count = int(problem.level_count[z])
    return _Zone(
        kw=problem.levels_kw[z, :count].copy(),
        count=count,
        influence=influence,
        free_c=problem.free_temperature_c[z],
        lower_c=problem.lower_c[z],
        upper_c=problem.upper_c[z],
        price_h=problem.price_per_kwh * problem.step_hours,
        weight_h=problem.discomfort_weight_per_kelvin_hour * problem.step_hours,
        penalty=float(problem.switching_penalty[z]),
        initial=int(problem.initial_level[z]),
        min_times=bool(
            problem.can_switch_off[z]
            and (problem.min_on_steps[z] > 1 or problem.min_off_steps[z] > 1)
        ),
    )


def _costs(zone: _Zone, rows: IntArray, temps: FloatArray | None = None) -> FloatArray:
    """The zone's share of the total for each candidate row (n, T).

    `temps` (n, T), when given, are the rows' temperatures, computed cheaply by the caller.
    """
    power = zone.kw[rows]
    if temps is None:
        temps = zone.free_c + power @ zone.influence
    outside = np.maximum(0.0, zone.lower_c - temps) + np.maximum(0.0, temps - zone.upper_c)
    changes = np.count_nonzero(np.diff(rows, axis=1), axis=1)
    if zone.initial != NO_LEVEL:
        changes = changes + (rows[:, 0] != zone.initial)
    return np.asarray(
        power @ zone.price_h + zone.weight_h * outside.sum(axis=1) + zone.penalty * changes
    )


def _candidates(zone: _Zone, row: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """Rows one move away from `row`, with the (first, second) step each move changes.

    Moves: a single step to any level (second = first), and two steps up to
    SHIFT_WINDOW_STEPS apart trading a level (heat moved earlier or later) or swapping levels.
    """
    steps = row.shape[0]
    rows = [np.broadcast_to(row, (zone.count * steps, steps)).copy()]
    step = np.repeat(np.arange(steps), zone.count)
    rows[0][np.arange(len(step)), step] = np.tile(np.arange(zone.count), steps)
    firsts, seconds = [step], [step]
    for d in range(1, min(SHIFT_WINDOW_STEPS, steps - 1) + 1):
        first = np.arange(steps - d)
        for up in (1, -1):
            moved = np.broadcast_to(row, (len(first), steps)).copy()
            moved[first, first] += up
            moved[first, first + d] -= up
            rows.append(moved)
        swapped = np.broadcast_to(row, (len(first), steps)).copy()
        swapped[first, first] = row[first + d]
        swapped[first, first + d] = row[first]
        rows.append(swapped)
        firsts += [first] * 3
        seconds += [first + d] * 3
    out = np.concatenate(rows)
    valid = np.all((out >= 0) & (out < zone.count), axis=1) & np.any(out != row, axis=1)
    return (
        np.asarray(out[valid], dtype=np.int64),
        np.concatenate(firsts)[valid],
        np.concatenate(seconds)[valid],
    )


def _moved_temperatures(
    zone: _Zone, row: IntArray, rows: IntArray, first: IntArray, second: IntArray
) -> FloatArray:
    """Temperatures of candidate rows that differ from `row` at most at `first` and `second`:
    O(n·T) from the influence rows of the two changed steps instead of O(n·T²)."""
    base_power = zone.kw[row]
    base = zone.free_c + base_power @ zone.influence
    n = np.arange(rows.shape[0])
    dp_first = zone.kw[rows[n, first]] - base_power[first]
    dp_second = np.where(second != first, zone.kw[rows[n, second]] - base_power[second], 0.0)
    return np.asarray(
        base
        + dp_first[:, None] * zone.influence[first]
        + dp_second[:, None] * zone.influence[second]
    )


class _State:
    def __init__(self, problem: Problem, levels: IntArray) -> None:
        self.problem = problem
        self.levels = levels.copy()
        self.zones = [_zone(problem, z) for z in range(problem.zones)]
        self.power = problem.power_kw(self.levels)
        self.total_kw = self.power.sum(axis=0)
        self.cap = problem.peak_power_cap_kw + CAP_TOLERANCE_KW
        self.cost = np.array(
            [_costs(zone, self.levels[z : z + 1])[0] for z, zone in enumerate(self.zones)]
        )

    def fits(self, z: int, rows: IntArray) -> BoolArray:
        others = self.total_kw - self.power[z]
        return np.asarray(np.all(others + self.zones[z].kw[rows] <= self.cap, axis=1))

    def runs_ok(self, z: int, row: IntArray) -> bool:
        if not self.zones[z].min_times:
            return True
        return min_run_violation(self.problem, z, self.zones[z].kw[row] > 0.0) is None

    def accept(self, z: int, row: IntArray, cost: float) -> None:
        self.levels[z] = row
        self.total_kw += self.zones[z].kw[row] - self.power[z]
        self.power[z] = self.zones[z].kw[row]
        self.cost[z] = cost

    def improve_zone(self, z: int) -> bool:
        """Apply improving moves to zone z from one batch scoring; True if any was applied."""
        zone = self.zones[z]
        rows, first, second = _candidates(zone, self.levels[z])
        fit = self.fits(z, rows)
        rows, first, second = rows[fit], first[fit], second[fit]
        if rows.shape[0] == 0:
            return False
        temps = _moved_temperatures(zone, self.levels[z], rows, first, second)
        costs = _costs(zone, rows, temps)
        order = np.argsort(costs)[:TOP_MOVES]
        improved = False
        base = self.levels[z].copy()
        for i in order:
            if costs[i] >= self.cost[z] - IMPROVEMENT and not improved:
                break
            # Re-apply the move's changed steps onto the current row and score it exactly.
            changed = rows[i] != base
            row = self.levels[z].copy()
            row[changed] = rows[i][changed]
            if not self.fits(z, row[None, :])[0] or not self.runs_ok(z, row):
                continue
            cost = float(_costs(zone, row[None, :])[0])
            if cost < self.cost[z] - IMPROVEMENT:
                self.accept(z, row, cost)
                improved = True
        return improved

    def trade_at_cap(self) -> bool:
        """Move one level from one zone to another in steps where the cap binds."""
        steps = self.problem.steps
        improved = False
        for k in np.flatnonzero(
            self.total_kw > self.cap - 1e-3 - np.min(self.problem.levels_kw[:, 1])
        ):
            ups: list[tuple[float, int, IntArray, float]] = []
            downs: list[tuple[float, int, IntArray, float]] = []
            for z, zone in enumerate(self.zones):
                level = int(self.levels[z, k])
                for delta, bucket in ((1, ups), (-1, downs)):
                    if 0 <= level + delta < zone.count:
                        row = self.levels[z].copy()
                        row[k] = level + delta
                        if self.runs_ok(z, row):
                            cost = float(_costs(zone, row[None, :])[0])
                            bucket.append((cost - self.cost[z], z, row, cost))
            for up in sorted(ups, key=lambda u: u[0])[:3]:
                for down in sorted(downs, key=lambda d: d[0])[:3]:
                    if up[1] == down[1] or up[0] + down[0] >= -IMPROVEMENT:
                        continue
                    zu, zd = up[1], down[1]
                    new_total = (
                        self.total_kw[k]
                        + self.zones[zu].kw[up[2][k]]
                        - self.power[zu, k]
                        + self.zones[zd].kw[down[2][k]]
                        - self.power[zd, k]
                    )
                    if new_total <= self.cap[k]:
                        self.accept(zd, down[2], down[3])
                        self.accept(zu, up[2], up[3])
                        improved = True
                        break
                else:
                    continue
                break
        del steps
        return improved


def polish(
    problem: Problem,
    levels: IntArray,
    stop: Callable[[], bool],
    report: Callable[[IntArray], None] | None = None,
    report_every_s: float = 0.05,
) -> IntArray:
    """A locally optimal feasible schedule no worse than feasible `levels`.

    Stops early when `stop()` is true. `report(levels)`, if given, receives the current
    schedule at most every `report_every_s` seconds while it improves.
    """
    state = _State(problem, levels)
    # Zones in turn (round robin), so that an early stop leaves every zone partly polished.
    active = list(range(problem.zones))
    turn = 0
    last_report = time.monotonic()
    while not stop():
        if active:
            turn %= len(active)
            if state.improve_zone(active[turn]):
                turn += 1
                if report is not None and time.monotonic() - last_report >= report_every_s:
                    report(state.levels.copy())
                    last_report = time.monotonic()
            else:
                del active[turn]
            continue
        if not state.trade_at_cap():
            break
        active = list(range(problem.zones))
    return state.levels
