"""Local search on the true objective: the finishing step every backend shares.

The objective is a sum over zones; only the peak cap couples them. So the search improves one
zone at a time, in turn, scoring whole batches of candidate rows at once (their temperature
trajectories follow in O(T) each from the influence rows of the changed steps): single-step
level changes, and shifts of heat between two steps a few hours apart. When those are
exhausted, it trades a level between two zones in steps where the cap binds, and then also tries
runs of steps set to one level. Every accepted move keeps the schedule feasible and strictly
lowers the total; the scoring is the contract's objective per zone, and the schedules leaving
here are scored again by the evaluator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from svc_optimizer.evaluate import CAP_TOLERANCE_KW, min_run_violation
from svc_optimizer.problem import NO_LEVEL, BoolArray, FloatArray, IntArray, Problem

SHIFT_WINDOW_STEPS = 12
"""How far apart (in steps) a shift move may move heat; 3 hours at 15-minute steps."""
BLOCK_STEPS = (2, 4, 8)
"""Lengths of the runs a block move sets to one level (smoothing rounded oscillations)."""
IMPROVEMENT = 1e-9
"""A move must lower the total by more than this to count."""
TOP_MOVES = 24
"""Moves re-checked one by one after each batch scoring, best first."""


@dataclass(frozen=True)
class _Zone:
    kw: FloatArray  # (L,)
    count: int
    influence: FloatArray  # (T, T): temperature at end of step j per kW in step k
    influence_before: FloatArray  # (T+1, T): row k sums the influence rows of steps < k
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
        influence_before=np.vstack([np.zeros((1, steps)), np.cumsum(influence, axis=0)]),
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


@dataclass(frozen=True)
class _Moves:
    """Candidate moves of one zone: steps [start, end) set to `level`, and optionally step
    `other` (-1 for none) set to `other_level`. Arrays of equal length n."""

    start: IntArray
    end: IntArray
    level: IntArray
    other: IntArray
    other_level: IntArray

    def row(self, i: int, current: IntArray) -> IntArray:
        out = current.copy()
        out[self.start[i] : self.end[i]] = self.level[i]
        if self.other[i] >= 0:
            out[self.other[i]] = self.other_level[i]
        return out


def _runs(zone: _Zone, steps: int, lengths: tuple[int, ...]) -> _Moves:
    """Every run of each length set to every level (length 1: single-step changes)."""
    starts = [np.arange(steps - n + 1) for n in lengths if n <= steps]
    ends = [np.arange(n, steps + 1) for n in lengths if n <= steps]
    start = np.repeat(np.concatenate(starts), zone.count)
    none = np.full(len(start), -1)
    return _Moves(
        start,
        np.repeat(np.concatenate(ends), zone.count),
        np.tile(np.arange(zone.count), len(start) // zone.count),
        none,
        none,
    )


def _shifts(zone: _Zone, row: IntArray) -> _Moves:
    """Two steps up to SHIFT_WINDOW_STEPS apart trading one level (heat moved earlier or
    later) or swapping their levels."""
    steps = row.shape[0]
    parts = []
    for d in range(1, min(SHIFT_WINDOW_STEPS, steps - 1) + 1):
        first = np.arange(steps - d)
        second = first + d
        for new_first, new_second in (
            (row[first] + 1, row[second] - 1),
            (row[first] - 1, row[second] + 1),
            (row[second], row[first]),
        ):
            parts.append((first, new_first, second, new_second))
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return _Moves(empty, empty, empty, empty, empty)
    first, new_first, second, new_second = (np.concatenate(p) for p in zip(*parts, strict=True))
    valid = (
        (new_first >= 0)
        & (new_first < zone.count)
        & (new_second >= 0)
        & (new_second < zone.count)
        & ((new_first != row[first]) | (new_second != row[second]))
    )
    return _Moves(
        first[valid], first[valid] + 1, new_first[valid], second[valid], new_second[valid]
    )


def _concat(a: _Moves, b: _Moves) -> _Moves:
    return _Moves(
        *(np.concatenate([x, y]) for x, y in zip(vars(a).values(), vars(b).values(), strict=True))
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

    def improve_zone(self, z: int, with_runs: bool) -> bool:
        """Apply improving moves to zone z from one batch scoring; True if any was applied.

        Without `with_runs`, only single steps change (cheap); with it, runs of steps too.
        """
        zone = self.zones[z]
        current = self.levels[z].copy()
        lengths = (1, *BLOCK_STEPS) if with_runs else (1,)
        moves = _concat(_runs(zone, current.shape[0], lengths), _shifts(zone, current))
        moves = self._fitting(z, moves)
        if moves.start.shape[0] == 0:
            return False
        costs = self._move_costs(z, moves)
        order = np.argsort(costs)[:TOP_MOVES]
        improved = False
        for i in order:
            if costs[i] >= self.cost[z] - IMPROVEMENT and not improved:
                break
            # Re-apply the move onto the current row (earlier moves may have changed it) and
            # score it exactly before accepting.
            row = moves.row(int(i), self.levels[z])
            if not self.fits(z, row[None, :])[0] or not self.runs_ok(z, row):
                continue
            cost = float(_costs(zone, row[None, :])[0])
            if cost < self.cost[z] - IMPROVEMENT:
                self.accept(z, row, cost)
                improved = True
        return improved

    def _fitting(self, z: int, moves: _Moves) -> _Moves:
        """The moves that keep every changed step under the cap."""
        zone = self.zones[z]
        slack = self.cap - (self.total_kw - self.power[z])  # room for this zone's power
        # Least room over each run [start, end): a sparse-table-free way via cumulative minima
        # per run length (few distinct lengths).
        least = np.empty(moves.start.shape[0])
        lengths = moves.end - moves.start
        for n in np.unique(lengths):
            pick = lengths == n
            window = np.lib.stride_tricks.sliding_window_view(slack, int(n)).min(axis=1)
            least[pick] = window[moves.start[pick]]
        ok = zone.kw[moves.level] <= least
        has_other = moves.other >= 0
        other = np.where(has_other, moves.other, 0)
        ok &= ~has_other | (zone.kw[moves.other_level] <= slack[other])
        return _Moves(*(a[ok] for a in vars(moves).values()))

    def _move_costs(self, z: int, moves: _Moves) -> FloatArray:
        """The zone's total after each move, in O(n·T) without building the rows."""
        zone = self.zones[z]
        row = self.levels[z]
        steps = row.shape[0]
        power = zone.kw[row]
        heat_before = np.vstack(
            [np.zeros((1, steps)), np.cumsum(power[:, None] * zone.influence, axis=0)]
        )
        base_temps = zone.free_c + heat_before[-1]
        energy_before = np.concatenate([[0.0], np.cumsum(power * zone.price_h)])
        price_before = np.concatenate([[0.0], np.cumsum(zone.price_h)])
        start, end, level = moves.start, moves.end, moves.level
        has_other = moves.other >= 0
        other = np.where(has_other, moves.other, 0)
        other_dp = np.where(has_other, zone.kw[moves.other_level] - power[other], 0.0)
        temps = (
            base_temps
            + zone.kw[level][:, None] * (zone.influence_before[end] - zone.influence_before[start])
            - (heat_before[end] - heat_before[start])
            + other_dp[:, None] * zone.influence[other]
        )
        energy = (
            energy_before[-1]
            + zone.kw[level] * (price_before[end] - price_before[start])
            - (energy_before[end] - energy_before[start])
            + zone.price_h[other] * other_dp
        )
        outside = np.maximum(0.0, zone.lower_c - temps) + np.maximum(0.0, temps - zone.upper_c)
        return np.asarray(
            energy
            + zone.weight_h * outside.sum(axis=1)
            + zone.penalty * self._changes_after(z, moves)
        )

    def _changes_after(self, z: int, moves: _Moves) -> IntArray:
        """Level changes of the zone after each move, from the transitions the move touches."""
        zone = self.zones[z]
        row = self.levels[z]
        steps = row.shape[0]
        has_initial = zone.initial != NO_LEVEL
        # change[j]: level of step j differs from step j-1 (j = 0: from the initial level).
        change = np.concatenate(
            [[has_initial and row[0] != zone.initial], row[1:] != row[:-1]]
        ).astype(np.int64)
        changes_before = np.concatenate([[0], np.cumsum(change)])
        start, end, level = moves.start, moves.end, moves.level
        other, other_level = moves.other, moves.other_level

        def new_level(j: IntArray) -> IntArray:
            inside = (j >= start) & (j < end)
            at_other = (j == other) & (other >= 0)
            return np.where(
                inside, level, np.where(at_other, other_level, row[np.clip(j, 0, steps - 1)])
            )

        def touched(j: IntArray, valid: BoolArray) -> IntArray:
            """New minus old transition at j (0 where not valid)."""
            jj = np.clip(j, 0, steps - 1)
            before = np.where(j > 0, new_level(j - 1), zone.initial)
            new = (new_level(j) != before) & ((j > 0) | has_initial)
            return np.where(valid, new.astype(np.int64) - change[jj], 0)

        # Transitions strictly inside a run vanish; those at its edges and around `other` change.
        inner = np.maximum(
            changes_before[np.maximum(end, start + 1)] - changes_before[start + 1], 0
        )
        delta = touched(start, np.ones_like(start, dtype=bool)) - inner
        delta += touched(end, (end < steps) & (end != other))
        delta += touched(other, other >= 0)
        delta += touched(other + 1, (other >= 0) & (other + 1 < steps))
        return np.asarray(changes_before[-1] + delta)

    def trade_at_cap(self) -> bool:
        """Move one level from one zone to another in steps where the cap binds."""
        smallest_step_kw = float(np.min(np.diff(self.problem.levels_kw[:, :2], axis=1)))
        binding = np.flatnonzero(self.total_kw > self.cap - smallest_step_kw - 1e-3)
        improved = False
        for k in binding:
            improved |= self._trade_at(int(k))
        return improved

    def _one_level(self, k: int, delta: int) -> list[tuple[float, int, IntArray, float]]:
        """(change of total, zone, row, zone cost) for each zone moved `delta` levels at k."""
        out = []
        for z, zone in enumerate(self.zones):
            level = int(self.levels[z, k]) + delta
            if 0 <= level < zone.count:
                row = self.levels[z].copy()
                row[k] = level
                if self.runs_ok(z, row):
                    cost = float(_costs(zone, row[None, :])[0])
                    out.append((cost - self.cost[z], z, row, cost))
        return sorted(out, key=lambda move: move[0])[:3]

    def _trade_at(self, k: int) -> bool:
        downs = self._one_level(k, -1)
        for gain, up, up_row, up_cost in self._one_level(k, 1):
            for loss, down, down_row, down_cost in downs:
                if up == down or gain + loss >= -IMPROVEMENT:
                    continue
                total = self.total_kw[k] - self.power[up, k] - self.power[down, k]
                total += self.zones[up].kw[up_row[k]] + self.zones[down].kw[down_row[k]]
                if total <= self.cap[k]:
                    self.accept(down, down_row, down_cost)
                    self.accept(up, up_row, up_cost)
                    return True
        return False


def polish(
    problem: Problem,
    levels: IntArray,
    stop: Callable[[], bool],
    report: Callable[[IntArray], None] | None = None,
    report_every_s: float = 0.05,
    zones: Sequence[int] | None = None,
) -> IntArray:
    """A locally optimal feasible schedule no worse than feasible `levels`.

    Stops early when `stop()` is true. `report(levels)`, if given, receives the current
    schedule at most every `report_every_s` seconds while it improves. `zones`, if given, are
    the only zones searched at first (the others are taken as already polished).
    """
    state = _State(problem, levels)
    # Zones in turn (round robin), so that an early stop leaves every zone partly polished;
    # cheap single-step moves first, runs of steps once those are exhausted.
    everywhere = list(range(problem.zones))
    active = everywhere if zones is None else sorted(set(zones))
    turn = 0
    blocks = False
    last_report = time.monotonic()
    while not stop():
        if active:
            turn %= len(active)
            if state.improve_zone(active[turn], blocks):
                turn += 1
                if report is not None and time.monotonic() - last_report >= report_every_s:
                    report(state.levels.copy())
                    last_report = time.monotonic()
            else:
                del active[turn]
            continue
        if state.trade_at_cap():
            active = everywhere
        elif not blocks:
            blocks = True
            active = everywhere if zones is None else sorted(set(zones))
        else:
            break
    return state.levels
