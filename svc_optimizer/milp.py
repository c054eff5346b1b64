"""Backend `milp`: HiGHS branch and bound on the exact MILP, warm-started, within the budget.

It waits briefly for the portfolio's first schedule to use as a warm start, then proposes every
improving integer solution HiGHS finds and reports its dual bound as it rises. On small problems
it proves optimality.
"""

from __future__ import annotations

import time
from typing import Any

import highspy
import numpy as np

from svc_optimizer.backends import BackendId, Run
from svc_optimizer.formulation import build
from svc_optimizer.highs import solver
from svc_optimizer.problem import Problem

WARM_START_WAIT_FRACTION = 0.3
"""Share of the budget the MILP waits for a warm start before starting without one (when run
in-process; `isolated` waits before starting the child instead)."""
MIP_RELATIVE_GAP = 1e-6
"""HiGHS stops when its gap is below this: tighter than the contract's 1e-4 for OPTIMAL."""


class Milp:
    id = BackendId.MILP
    description = "HiGHS mixed-integer program, warm-started, reporting lower bounds"
    min_budget_s = 0.05
    max_zone_steps = 20_000
    reports_lower_bound = True

    def configured(self) -> bool:
        return True

    def run(self, problem: Problem, run: Run) -> None:
        wait_until = time.monotonic() + WARM_START_WAIT_FRACTION * run.remaining_s()
        while (
            run.expect_warm_start
            and run.best() is None
            and time.monotonic() < wait_until
            and not run.should_stop()
        ):
            time.sleep(0.005)
        model = build(problem, integer=True)
        h = solver(model, run.remaining_s(), run.stop)
        h.setOptionValue("mip_rel_gap", MIP_RELATIVE_GAP)
        warm = run.best()
        if warm is not None:
            solution = highspy.HighsSolution()
            solution.col_value = model.encode(problem, warm)
            solution.value_valid = True
            h.setSolution(solution)
        last_bound = -np.inf

        def improving(event: Any) -> None:
            values = np.asarray(event.data_out.mip_solution)
            run.propose(model.decode(values))

        def progress(event: Any) -> None:
            nonlocal last_bound
            bound = float(event.data_out.mip_dual_bound)
            if np.isfinite(bound) and bound > last_bound + 1e-9:
                last_bound = bound
                run.bound(bound)

        h.cbMipImprovingSolution.subscribe(improving)
        h.cbMipInterrupt.subscribe(progress)
        h.run()
        info = h.getInfo()
        if h.getModelStatus() == highspy.HighsModelStatus.kOptimal:
            values = np.asarray(h.getSolution().col_value)
            run.propose(model.decode(values))
            run.bound(float(info.mip_dual_bound))
        elif np.isfinite(info.mip_dual_bound) and info.mip_dual_bound > last_bound:
            run.bound(float(info.mip_dual_bound))
