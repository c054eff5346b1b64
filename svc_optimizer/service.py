"""The optimizer servicer: translates protobuf to domain calls and back, nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import grpc
from dwave.cloud.config import get_configfile_path
from dwave.system import DWaveSampler, LeapHybridCQMSampler
from google.protobuf import duration_pb2, timestamp_pb2
from hvac.optimizer.v1 import optimizer_service_pb2 as pb
from hvac.optimizer.v1 import optimizer_service_pb2_grpc as pb_grpc
from hvac.optimizer.v1 import schedule_problem_pb2 as sp

from meshkit import Service, abort, rich_status
from meshkit.errors import retry_later
from svc_optimizer.anneal import Anneal
from svc_optimizer.backends import Backend, BackendId
from svc_optimizer.breaker import CircuitBreaker, CircuitState
from svc_optimizer.cache import ResultCache
from svc_optimizer.config import OptimizerConfig
from svc_optimizer.evaluate import Constraint, temperatures
from svc_optimizer.isolated import Isolated, warm_up
from svc_optimizer.milp import Milp
from svc_optimizer.portfolio import Portfolio, PreferenceError, Stats, Status, Update
from svc_optimizer.problem import Problem, from_proto
from svc_optimizer.qpu import Qpu
from svc_optimizer.relax_polish import RelaxPolish

DEFAULT_BUDGET_S = 1.0

log = logging.getLogger("svc_optimizer.service")

_STATUS = {
    Status.IMPROVING: pb.SOLVE_STATUS_IMPROVING,
    Status.OPTIMAL: pb.SOLVE_STATUS_OPTIMAL,
    Status.FEASIBLE: pb.SOLVE_STATUS_FEASIBLE,
    Status.INFEASIBLE: pb.SOLVE_STATUS_INFEASIBLE,
    Status.NO_SOLUTION: pb.SOLVE_STATUS_NO_SOLUTION,
}
_CONSTRAINT = {
    Constraint.PEAK_POWER_CAP: pb.HARD_CONSTRAINT_PEAK_POWER_CAP,
    Constraint.MIN_ON_STEPS: pb.HARD_CONSTRAINT_MIN_ON_STEPS,
    Constraint.MIN_OFF_STEPS: pb.HARD_CONSTRAINT_MIN_OFF_STEPS,
}
_CIRCUIT = {
    CircuitState.CLOSED: pb.CIRCUIT_STATE_CLOSED,
    CircuitState.OPEN: pb.CIRCUIT_STATE_OPEN,
    CircuitState.HALF_OPEN: pb.CIRCUIT_STATE_HALF_OPEN,
}


def problem_sha256(problem: sp.ScheduleProblem) -> str:
    """Digest of the problem's deterministic serialisation: equal problems, equal digests."""
    return hashlib.sha256(problem.SerializeToString(deterministic=True)).hexdigest()


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(max(0, int(seconds * 1e9)))
    return out


class OptimizerServicer(pb_grpc.OptimizerServiceServicer):
    def __init__(
        self, config: OptimizerConfig, portfolio: Portfolio, cache: ResultCache | None = None
    ) -> None:
        self.config = config
        self.portfolio = portfolio
        self.cache = cache
        self._slots = asyncio.Semaphore(config.max_concurrent_solves)

    def budget_s(self, request: pb.SolveRequest, context: grpc.aio.ServicerContext) -> float:
        budget = (
            request.deadline.ToTimedelta().total_seconds()
            if request.HasField("deadline")
            else DEFAULT_BUDGET_S
        )
        remaining = context.time_remaining()
        if remaining is not None:  # None without an RPC deadline
            margin = self.config.rpc_margin_s + self.config.rpc_margin_fraction * remaining
            budget = min(budget, remaining - margin)
        return budget

    async def Solve(  # the generated servicer's name
        self, request: pb.SolveRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SolveResponse]:
        budget = self.budget_s(request, context)
        if budget <= 0:
            await abort(
                context,
                rich_status(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "the RPC deadline leaves no time to solve"
                ),
            )
        digest = problem_sha256(request.problem)
        problem = from_proto(request.problem)
        preference = BackendId(request.backend_preference) if request.backend_preference else None
        gap = request.relative_gap_target if request.HasField("relative_gap_target") else None
        use_cache = self.cache is not None and request.cache_policy != pb.CACHE_POLICY_BYPASS
        if self.cache is not None and use_cache:
            started = time.monotonic()
            hit = await self.cache.lookup(digest, request.backend_preference, budget, gap)
            if hit is not None:
                yield from_cache(hit, time.monotonic() - started)
                return
        if self._slots.locked():  # no await between this check and taking the slot
            await abort(
                context,
                retry_later(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, "too many solves running; retry later", 0.5
                ),
            )
        async with self._slots:
            sequence = 0
            updates: AsyncGenerator[Update] = self.portfolio.solve(problem, budget, preference, gap)
            try:
                async for update in updates:
                    sequence += 1
                    answer = response(problem, update, sequence, digest)
                    if answer.final:
                        _log_final(update, digest, problem)
                        if self.cache is not None and use_cache:
                            await self.cache.store(
                                digest, request.backend_preference, budget, gap, answer
                            )
                    yield answer
            except PreferenceError as exc:
                status = (
                    retry_later(grpc.StatusCode.UNAVAILABLE, str(exc), exc.retry_s)
                    if exc.unavailable
                    else rich_status(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
                )
                await abort(context, status)
            finally:
                await updates.aclose()

    async def ListSolvers(  # the generated servicer's name
        self, request: pb.ListSolversRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSolversResponse:
        return list_solvers(self.portfolio)


def _log_final(update: Update, digest: str, problem: Problem) -> None:
    log.info(
        "solve finished",
        extra={
            "problem_sha256": digest,
            "zones": problem.zones,
            "steps": problem.steps,
            "status": update.status.name,
            "total": None if update.objective is None else update.objective.total,
            "relative_gap": update.gap,
            "backend": None if update.backend is None else update.backend.name,
            "elapsed_s": round(update.elapsed_s, 4),
            "failed_backends": [s.backend.name for s in update.stats if s.runs_failed],
        },
    )


def list_solvers(portfolio: Portfolio) -> pb.ListSolversResponse:
    out = pb.ListSolversResponse()
    for backend in portfolio.backends:
        state, available = portfolio.availability(backend)
        info = out.solvers.add(
            backend=pb.Backend.ValueType(backend.id),
            description=backend.description,
            configured=backend.configured(),
            circuit_state=_CIRCUIT[state],
            available=available,
            max_zone_steps=backend.max_zone_steps,
            reports_lower_bound=backend.reports_lower_bound,
        )
        info.min_budget.CopyFrom(_duration(backend.min_budget_s))
        half_open_in = portfolio.breakers[backend.id].half_open_in_s()
        if half_open_in is not None:
            at = timestamp_pb2.Timestamp()
            at.GetCurrentTime()
            at.FromNanoseconds(at.ToNanoseconds() + int(half_open_in * 1e9))
            info.half_open_time.CopyFrom(at)
    return out


def from_cache(stored: pb.SolveResponse, elapsed_s: float) -> pb.SolveResponse:
    """A stored final response as this request's single update."""
    out = pb.SolveResponse()
    out.CopyFrom(stored)
    out.from_cache = True
    out.sequence_number = 1
    out.elapsed.CopyFrom(_duration(elapsed_s))
    del out.backend_stats[:]
    for stats in stored.backend_stats:
        out.backend_stats.add(
            backend=stats.backend, skipped=True, skip_reason="answered from the cache"
        )
    return out


def response(
    problem: Problem,
    update: Update,
    sequence: int,
    digest: str,
) -> pb.SolveResponse:
    """The SolveResponse of one domain update."""
    out = pb.SolveResponse(
        status=_STATUS[update.status],
        final=update.final,
        sequence_number=sequence,
        problem_sha256=digest,
    )
    out.elapsed.CopyFrom(_duration(update.elapsed_s))
    if update.levels is not None and update.objective is not None:
        power = problem.power_kw(update.levels)
        temps = temperatures(problem, power)
        for z, zone_id in enumerate(problem.zone_ids):
            out.schedule.zones.add(
                zone_id=zone_id,
                level_index=update.levels[z].tolist(),
                power_kw=power[z].tolist(),
                temperature_c=temps[z].tolist(),
            )
        o = update.objective
        out.objective.CopyFrom(
            sp.ObjectiveBreakdown(
                energy_cost=o.energy_cost,
                energy_kwh=o.energy_kwh,
                discomfort_kelvin_hours=o.discomfort_kelvin_hours,
                discomfort_cost=o.discomfort_cost,
                level_changes=o.level_changes,
                switching_cost=o.switching_cost,
                total=o.total,
                peak_power_kw=o.peak_power_kw,
            )
        )
    if update.backend is not None and update.levels is not None:
        out.backend = pb.Backend.ValueType(update.backend)
    if update.lower_bound is not None and math.isfinite(update.lower_bound):
        out.best_lower_bound = update.lower_bound
    if update.gap is not None and update.levels is not None:
        out.relative_gap = update.gap
    if update.infeasibility is not None:
        why = update.infeasibility
        out.infeasibility.constraint = _CONSTRAINT.get(
            why.constraint, pb.HARD_CONSTRAINT_UNSPECIFIED
        )
        if why.step is not None:
            out.infeasibility.step = why.step
        out.infeasibility.zone_ids.extend(problem.zone_ids[z] for z in why.zones)
        out.infeasibility.message = why.message
    out.backend_stats.extend(_stats(s) for s in update.stats)
    return out


def _stats(stats: Stats) -> pb.BackendStats:
    out = pb.BackendStats(
        backend=pb.Backend.ValueType(stats.backend),
        runs=stats.runs,
        runs_failed=stats.runs_failed,
        runs_timed_out=stats.runs_timed_out,
        skipped=stats.skipped,
        skip_reason=stats.skip_reason if stats.skipped else "",
        improvements=stats.improvements,
    )
    if stats.best_total is not None:
        out.best_total = stats.best_total
    out.wall_time.CopyFrom(_duration(stats.wall_s))
    qpu = stats.figures.get("qpu")
    if isinstance(qpu, pb.QpuStats):
        out.qpu.CopyFrom(qpu)
    return out


def default_backends(config: OptimizerConfig) -> list[Backend]:
    """The backends of a replica under `config`; the QPU only with D-Wave credentials."""
    # Credentials: the token, else the dwave-cloud-client configuration file if there is one.
    client: dict[str, str] = {"token": config.dwave_token} if config.dwave_token else {}
    if client or get_configfile_path() is not None:
        qpu = Qpu(
            lambda: DWaveSampler(**client),
            lambda: LeapHybridCQMSampler(**client),
            config.qpu_direct_max_variables,
        )
    else:
        qpu = Qpu(None, None)
    return [RelaxPolish(), Isolated(Milp), Isolated(Anneal), qpu]


def optimizer_service(
    config: OptimizerConfig, backends: Sequence[Backend], cache: ResultCache | None = None
) -> Service:
    """The OptimizerService over `backends`, each with a breaker configured by `config`."""
    breakers = {
        b.id: CircuitBreaker(config.breaker_failures, config.breaker_open_s) for b in backends
    }
    servicer = OptimizerServicer(config, Portfolio(backends, breakers), cache)
    return Service.generated(pb, pb_grpc, "OptimizerService", servicer)


@contextlib.asynccontextmanager
async def _open(config: OptimizerConfig) -> AsyncIterator[list[Service]]:
    await asyncio.to_thread(warm_up)  # start the solver forkserver before the first solve
    cache = None
    if config.redis_url:
        cache = ResultCache.from_url(config.redis_url, config.redis_key_prefix, config.cache_ttl_s)
    try:
        yield [optimizer_service(config, default_backends(config), cache)]
    finally:
        if cache is not None:
            await cache.close()


def services(config: OptimizerConfig) -> contextlib.AbstractAsyncContextManager[list[Service]]:
    """The services this process serves, open for as long as the context is."""
    return _open(config)
