"""Solver quality over time: each backend and the portfolio on generated HVAC instances.

Instances: Z in {3, 10, 30} zones x T in {24, 96} steps of 15 min, 4 equally spaced levels,
time-of-use prices, a binding peak cap, seeds 1 and 2 (`svc_optimizer.instances`). For each
instance the portfolio runs once per deadline (0.1, 0.3, 1, 5 s); each backend runs alone once
with a 5 s budget and its figures at the shorter deadlines are read off its improvement
timeline. Figures per size, worst over seeds: time to the first feasible schedule, time to
within 1 % and 0.5 % of the best known total (the best any run found), and the gap to the best
lower bound (the LP relaxation's or HiGHS's MILP bound, whichever is higher) at each deadline.

The service's configuration is used: relax-polish on a thread, MILP and annealing in child
processes (`svc_optimizer.isolated`). Wall-clock figures depend on the machine's load, which is
recorded with the results.

Run: ``make bench`` (all benchmarks) or ``.venv/bin/python -m bench.solver`` (about 4 minutes).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass, field

from bench.report import Figure, write
from svc_optimizer.anneal import Anneal
from svc_optimizer.backends import Backend, BackendId
from svc_optimizer.instances import generated_problem
from svc_optimizer.isolated import Isolated, warm_up
from svc_optimizer.milp import Milp
from svc_optimizer.portfolio import Portfolio
from svc_optimizer.problem import Problem, from_proto
from svc_optimizer.relax_polish import RelaxPolish

SIZES = [(3, 24), (3, 96), (10, 24), (10, 96), (30, 24), (30, 96)]
SEEDS = [1, 2]
DEADLINES_S = [0.1, 0.3, 1.0, 5.0]
TRAJECTORY_BUDGET_S = 5.0
GOALS = {  # (zones, steps, deadline): highest acceptable gap to the lower bound
    (10, 96, 0.3): 0.015,
    (10, 96, 0.1): 0.015,  # stretch goal
    (30, 96, 1.0): 0.015,
}


@dataclass
class Trace:
    """One run: (elapsed s, total) per improvement, its final total and the bound it saw."""

    points: list[tuple[float, float]] = field(default_factory=list)
    lower_bound: float = -math.inf

    def best_at(self, t_s: float) -> float:
        totals = [total for at, total in self.points if at <= t_s]
        return min(totals) if totals else math.inf

    def time_to(self, target: float) -> float:
        return next((at for at, total in self.points if total <= target), math.inf)


async def _run(
    backends: list[Backend], problem: Problem, budget_s: float, preference: BackendId | None
) -> Trace:
    trace = Trace()
    async for update in Portfolio(backends).solve(problem, budget_s, preference):
        if update.objective is not None:
            trace.points.append((update.elapsed_s, update.objective.total))
        if update.lower_bound is not None:
            trace.lower_bound = max(trace.lower_bound, update.lower_bound)
    return trace


def _all_backends() -> list[Backend]:
    return [RelaxPolish(), Isolated(Milp), Isolated(Anneal)]


async def _instance(zones: int, steps: int, seed: int) -> dict[str, dict[float, Trace]]:
    problem = from_proto(generated_problem(zones, steps, seed))
    runs: dict[str, dict[float, Trace]] = {"portfolio": {}}
    for deadline in DEADLINES_S:
        runs["portfolio"][deadline] = await _run(_all_backends(), problem, deadline, None)
    for backend in _all_backends():
        trace = await _run([backend], problem, TRAJECTORY_BUDGET_S, backend.id)
        runs[backend.id.name.lower().replace("_", "-")] = {d: trace for d in DEADLINES_S}
    return runs


def _gap(total: float, bound: float) -> float:
    """Relative gap; infinite when there is no schedule yet."""
    if not math.isfinite(total):
        return math.inf
    return (total - bound) / max(abs(total), 1e-9)


def main() -> int:
    figures: list[Figure] = []
    warm_up()
    started = time.monotonic()
    for zones, steps in SIZES:
        worst: dict[str, float] = {}
        for seed in SEEDS:
            runs = asyncio.run(_instance(zones, steps, seed))
            traces = [t for by_deadline in runs.values() for t in by_deadline.values()]
            best_known = min(min(total for _, total in t.points) for t in traces if t.points)
            bound = max(t.lower_bound for t in traces)
            for solver, by_deadline in runs.items():
                longest = by_deadline[max(DEADLINES_S)]
                values = {
                    "first feasible": longest.time_to(math.inf) * 1000,
                    "within 1 % of best known": longest.time_to(best_known * 1.01) * 1000,
                    "within 0.5 % of best known": longest.time_to(best_known * 1.005) * 1000,
                }
                for deadline, trace in by_deadline.items():
                    values[f"gap at {deadline:g} s"] = 100 * _gap(trace.best_at(deadline), bound)
                for what, value in values.items():
                    key = f"{zones}x{steps} {solver} {what}"
                    worst[key] = max(worst.get(key, -math.inf), value)
        for key, value in worst.items():
            is_gap = " gap at " in key
            goal_gap = next(
                (g for (z, t, d), g in GOALS.items() if key == f"{z}x{t} portfolio gap at {d:g} s"),
                None,
            )
            if goal_gap is not None:
                goal, met = f"<= {100 * goal_gap:g} % (worst seed)", value <= 100 * goal_gap
            else:
                goal, met = ("report" if is_gap else "report; inf = never"), None
            figures.append(Figure(key, value, "%" if is_gap else "ms", goal, met))
    write(
        "solver",
        figures,
        {
            "sizes": SIZES,
            "seeds": SEEDS,
            "deadlines_s": DEADLINES_S,
            "levels": 4,
            "trajectory_budget_s": TRAJECTORY_BUDGET_S,
            "run_time_s": round(time.monotonic() - started, 1),
            # Wall-clock figures depend on what else the machine runs: recorded for context.
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
