"""Backend `qpu`: D-Wave annealer, direct with minor embedding for small models, else Leap hybrid.

Direct mode samples the annealer BQM (the one `anneal` uses) through `EmbeddingComposite`, which
finds the embedding, sets the chain strength and unembeds; the best samples are repaired and
polished like any other backend's. Larger problems go to `LeapHybridCQMSampler` with the CQM
faithful to the MILP, but only when the budget covers its minimum time limit. Samplers are
created by factories so tests run the direct path for real against `MockDWaveSampler`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dimod
import numpy as np
from dwave.system import EmbeddingComposite
from hvac.optimizer.v1 import optimizer_service_pb2 as pb

from svc_optimizer.backends import BackendId, Extra, Run
from svc_optimizer.bqm import build_bqm, decode
from svc_optimizer.cqm import build_cqm, decode_cqm
from svc_optimizer.polish import polish
from svc_optimizer.problem import Problem
from svc_optimizer.relax import solve_relaxation
from svc_optimizer.repair import power_gradient, repair_power

SamplerFactory = Callable[[], Any]
NUM_READS = 100


class Qpu:
    id = BackendId.QPU
    description = "D-Wave annealer: direct QPU with minor embedding, or Leap hybrid CQM"
    min_budget_s = 0.5
    max_zone_steps = 20_000
    reports_lower_bound = False

    def __init__(
        self,
        direct: SamplerFactory | None,
        hybrid: SamplerFactory | None = None,
        direct_max_variables: int = 64,
    ) -> None:
        self._direct = direct
        self._hybrid = hybrid
        self.direct_max_variables = direct_max_variables

    def configured(self) -> bool:
        return self._direct is not None or self._hybrid is not None

    def run(self, problem: Problem, run: Run) -> None:
        relaxation = solve_relaxation(problem, run.remaining_s(), run.stop)
        bqm, enc = build_bqm(problem, relaxation.temperature_c)
        if self._direct is not None and enc.variables <= self.direct_max_variables:
            sampler = EmbeddingComposite(self._direct())
            sampleset = sampler.sample(
                bqm, num_reads=NUM_READS, return_embedding=True, label="hvac-schedule"
            )
            run.emit(Extra(self.id, {"qpu": _direct_stats(sampler, sampleset, bqm)}))
            order = list(bqm.variables)
            for sample in sampleset.truncate(3).samples():
                bits = np.fromiter((sample[v] for v in order), dtype=np.int64, count=len(order))
                self._finish(problem, run, decode(problem, enc, bits))
            return
        if self._hybrid is None:
            raise RuntimeError("model too large for direct QPU sampling and no hybrid solver")
        hybrid = self._hybrid()
        cqm, model = build_cqm(problem)
        minimum_s = float(hybrid.min_time_limit(cqm))
        if minimum_s > run.remaining_s():
            raise TimeoutError(f"Leap hybrid needs {minimum_s:g} s, more than the budget left")
        sampleset = hybrid.sample_cqm(cqm, time_limit=max(minimum_s, run.remaining_s() * 0.8))
        timing = sampleset.info.get("qpu_access_time", 0)
        stats = pb.QpuStats(mode=pb.QpuStats.MODE_HYBRID_CQM, solver_name=str(hybrid.solver.name))
        stats.qpu_access_time.FromMicroseconds(int(timing))
        run.emit(Extra(self.id, {"qpu": stats}))
        feasible = sampleset.filter(lambda row: row.is_feasible)
        if len(feasible):
            self._finish(problem, run, decode_cqm(model, feasible.first.sample))

    def _finish(self, problem: Problem, run: Run, levels: np.ndarray[Any, Any]) -> None:
        start = repair_power(problem, problem.power_kw(levels), power_gradient(problem, levels))
        run.propose(start)
        run.propose(polish(problem, start, run.should_stop))


def _solver_name(child: Any) -> str:
    solver = getattr(child, "solver", None)
    name = getattr(solver, "name", None)
    return str(name) if name else type(child).__name__


def _direct_stats(
    sampler: EmbeddingComposite, sampleset: dimod.SampleSet, bqm: dimod.BinaryQuadraticModel
) -> pb.QpuStats:
    context = sampleset.info.get("embedding_context", {})
    embedding = context.get("embedding", {})
    chains = [len(chain) for chain in embedding.values()]
    timing = sampleset.info.get("timing", {})
    stats = pb.QpuStats(
        mode=pb.QpuStats.MODE_DIRECT,
        solver_name=_solver_name(sampler.child),
        logical_variables=bqm.num_variables,
        physical_qubits=sum(chains),
        max_chain_length=max(chains, default=0),
        chain_strength=float(context.get("chain_strength", 0.0)),
        num_reads=NUM_READS,
        chain_break_fraction=float(np.mean(sampleset.record.chain_break_fraction)),
    )
    stats.qpu_access_time.FromMicroseconds(int(timing.get("qpu_access_time", 0)))
    return stats
