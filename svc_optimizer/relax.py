"""LP relaxation and rounding: a good first schedule and a lower bound in a fraction of a second.

The LP is the MILP of `formulation` without integrality, so its optimum bounds the true
objective from below. Its power trajectory is rounded step by step with error diffusion: each
step picks the level nearest to the LP's power plus the heat still owed by earlier rounding
(decayed by the zone's `a`), so temperatures track the LP's trajectory instead of drifting.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import highspy
import numpy as np

from svc_optimizer.formulation import LinearModel, build
from svc_optimizer.highs import solver
from svc_optimizer.problem import FloatArray, Problem


class RelaxationError(RuntimeError):
    """HiGHS did not solve the LP relaxation (interrupted, out of time, or numerically failed)."""


@dataclass(frozen=True)
class Relaxation:
    """The LP optimum: its power trajectory (Z, T), temperatures, and value (a lower bound)."""

    power_kw: FloatArray
    temperature_c: FloatArray
    lower_bound: float


def solve_relaxation(
    problem: Problem, time_limit_s: float, stop: threading.Event, switching: bool = True
) -> Relaxation:
    """Solve the LP relaxation; raises RelaxationError without an optimal LP solution.

    With switching=False, the (much faster) LP without the switching penalty: still a lower
    bound, as that penalty is never negative.
    """
    model = build(problem, integer=False, switching=switching)
    h = solver(model, time_limit_s, stop)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise RelaxationError(f"LP relaxation ended {h.modelStatusToString(h.getModelStatus())}")
    values = np.asarray(h.getSolution().col_value)
    return Relaxation(
        power_kw=_power(problem, model, values),
        temperature_c=values[model.temperature_columns],
        lower_bound=float(h.getInfo().objective_function_value),
    )


def _power(problem: Problem, model: LinearModel, values: FloatArray) -> FloatArray:
    out = np.empty((problem.zones, problem.steps))
    for z, cols in enumerate(model.level_columns):
        kw = problem.levels_kw[z, : problem.level_count[z]]
        if cols.ndim == 1:
            out[z] = kw[0] + (kw[1] - kw[0]) * values[cols]
        else:
            out[z] = values[cols] @ kw
    return out
