"""Backend `anneal`: simulated annealing and tabu (dwave-samplers) on the BQM, then repair, polish.

It solves the LP relaxation for the comfort target, builds the BQM once, then alternates short
annealing (and, on models small enough for tabu's dense matrix, tabu) runs until the budget
ends, repairing and polishing each best sample on the true objective.
"""

from __future__ import annotations

import numpy as np
from dwave.samplers import SimulatedAnnealingSampler, TabuSampler

from svc_optimizer.backends import BackendId, Run
from svc_optimizer.bqm import build_bqm, decode
from svc_optimizer.polish import polish
from svc_optimizer.problem import Problem
from svc_optimizer.relax import solve_relaxation
from svc_optimizer.repair import power_gradient, repair_power

TABU_MAX_VARIABLES = 3000
"""Tabu densifies the model into an N x N matrix; above this it would need gigabytes."""


class Anneal:
    id = BackendId.ANNEAL
    description = "simulated annealing and tabu search on a binary quadratic model, then polish"
    min_budget_s = 2.0
    max_zone_steps = 4000
    reports_lower_bound = False

    def configured(self) -> bool:
        return True

    def run(self, problem: Problem, run: Run) -> None:
        relaxation = solve_relaxation(problem, run.remaining_s(), run.stop)
        bqm, enc = build_bqm(problem, relaxation.temperature_c)
        order = list(range(enc.variables))
        samplers: list[str] = ["sa", "tabu"] if enc.variables <= TABU_MAX_VARIABLES else ["sa"]
        attempt = 0
        while not run.should_stop():
            kind = samplers[attempt % len(samplers)]
            if kind == "sa":
                sampleset = SimulatedAnnealingSampler().sample(  # type: ignore[no-untyped-call]
                    bqm,
                    num_reads=4,
                    num_sweeps=500,
                    seed=attempt,
                    interrupt_function=run.should_stop,
                )
            else:
                timeout_ms = int(max(10.0, min(500.0, run.remaining_s() * 500)))
                sampleset = TabuSampler().sample(  # type: ignore[no-untyped-call]
                    bqm, num_reads=1, timeout=timeout_ms, seed=attempt
                )
            attempt += 1
            if len(sampleset) == 0:
                continue
            best = sampleset.first.sample
            bits = np.fromiter((best[v] for v in order), dtype=np.int64, count=len(order))
            levels = decode(problem, enc, bits)
            start = repair_power(problem, problem.power_kw(levels), power_gradient(problem, levels))
            run.propose(start)
            run.propose(polish(problem, start, run.should_stop))
