"""The optimizer service through a real channel: streaming, statuses, errors, solver list."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2
from hvac.optimizer.v1 import optimizer_service_pb2 as pb
from hvac.optimizer.v1 import optimizer_service_pb2_grpc as pb_grpc

from meshkit import serve
from svc_optimizer.config import OptimizerConfig
from svc_optimizer.evaluate import evaluate, violation
from svc_optimizer.instances import generated_problem
from svc_optimizer.problem import IntArray, from_proto
from svc_optimizer.service import services


@pytest.fixture
async def optimizer() -> AsyncIterator[pb_grpc.OptimizerServiceStub]:
    async with services(OptimizerConfig(max_concurrent_solves=2)) as built:
        server = await serve(built)
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                yield pb_grpc.OptimizerServiceStub(channel)
        finally:
            await server.stop(0)


def _request(
    zones: int,
    steps: int,
    budget_s: float,
    backend_preference: pb.Backend.ValueType = pb.BACKEND_UNSPECIFIED,
    cache_policy: pb.CachePolicy.ValueType = pb.CACHE_POLICY_UNSPECIFIED,
) -> pb.SolveRequest:
    deadline = duration_pb2.Duration()
    deadline.FromMilliseconds(int(budget_s * 1000))
    return pb.SolveRequest(
        problem=generated_problem(zones, steps, 7),
        deadline=deadline,
        backend_preference=backend_preference,
        cache_policy=cache_policy,
    )


async def test_a_10x96_solve_streams_improvements_before_a_feasible_final(
    optimizer: pb_grpc.OptimizerServiceStub,
) -> None:
    request = _request(10, 96, 1.0, cache_policy=pb.CACHE_POLICY_BYPASS)
    responses = [r async for r in optimizer.Solve(request)]
    *improving, final = responses
    assert improving, "no improvement before the final update"
    assert all(r.status == pb.SOLVE_STATUS_IMPROVING and not r.final for r in improving)
    assert final.final and final.status in (pb.SOLVE_STATUS_FEASIBLE, pb.SOLVE_STATUS_OPTIMAL)
    assert [r.sequence_number for r in responses] == list(range(1, len(responses) + 1))
    problem = from_proto(request.problem)
    for r in responses:
        levels = [list(z.level_index) for z in r.schedule.zones]
        assert violation(problem, _array(levels)) is None
        assert r.objective.total == pytest.approx(evaluate(problem, _array(levels)).total)
        assert len(r.problem_sha256) == 64
    assert final.HasField("best_lower_bound") and final.HasField("relative_gap")
    assert final.best_lower_bound <= final.objective.total
    assert [s.backend for s in final.backend_stats] == [1, 2, 3, 4][: len(final.backend_stats)]


def _array(levels: list[list[int]]) -> IntArray:
    return np.array(levels, dtype=np.int64)


async def test_an_infeasible_problem_is_a_result_not_an_error(
    optimizer: pb_grpc.OptimizerServiceStub,
) -> None:
    request = _request(2, 8, 0.5)
    for zone in request.problem.zones:
        zone.power_levels_kw[0] = 0.5
    request.problem.peak_power_cap_kw[5] = 0.2
    (final,) = [r async for r in optimizer.Solve(request)]
    assert final.status == pb.SOLVE_STATUS_INFEASIBLE and final.final
    assert final.infeasibility.constraint == pb.HARD_CONSTRAINT_PEAK_POWER_CAP
    assert final.infeasibility.step == 5
    assert "peak_power_cap_kw[5]" in final.infeasibility.message
    assert not final.HasField("schedule")


async def test_an_unconfigured_preferred_backend_is_a_failed_precondition(
    optimizer: pb_grpc.OptimizerServiceStub,
) -> None:
    request = _request(2, 8, 0.5, backend_preference=pb.BACKEND_QPU)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in optimizer.Solve(request):
            pass
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not configured" in (caught.value.details() or "")


async def test_list_solvers_names_every_backend_in_order(
    optimizer: pb_grpc.OptimizerServiceStub,
) -> None:
    listed = await optimizer.ListSolvers(pb.ListSolversRequest())
    backends = [s.backend for s in listed.solvers]
    assert backends == sorted(backends)
    by_backend = {s.backend: s for s in listed.solvers}
    relax = by_backend[pb.BACKEND_RELAX_POLISH]
    assert relax.configured and relax.available and relax.reports_lower_bound
    assert relax.circuit_state == pb.CIRCUIT_STATE_CLOSED


def _solver_work() -> list[str]:
    threads = [t.name for t in threading.enumerate() if t.name.startswith("solver-")]
    children = [p.name for p in multiprocessing.active_children() if p.name.startswith("solver-")]
    return threads + children


async def test_cancelling_the_rpc_stops_the_solver_threads_and_processes(
    optimizer: pb_grpc.OptimizerServiceStub,
) -> None:
    call = optimizer.Solve(_request(10, 96, 20.0, cache_policy=pb.CACHE_POLICY_BYPASS))
    first = await call.read()
    assert first.status == pb.SOLVE_STATUS_IMPROVING
    for _ in range(1000):  # the MILP process starts once a warm start exists
        if "solver-milp" in [p.name for p in multiprocessing.active_children()]:
            break
        await asyncio.sleep(0.01)
    assert "solver-relax_polish" in _solver_work() and "solver-milp" in _solver_work()
    call.cancel()
    for _ in range(500):  # the server notices the cancellation asynchronously
        if not _solver_work():
            break
        await asyncio.sleep(0.01)
    assert _solver_work() == []


async def test_the_qpu_path_runs_end_to_end_on_the_mock_sampler() -> None:
    # MockDWaveSampler is the one stand-in allowed: D-Wave's cloud cannot be reached here.
    from dwave.system.testing import MockDWaveSampler

    from svc_optimizer.anneal import Anneal
    from svc_optimizer.backends import Backend
    from svc_optimizer.milp import Milp
    from svc_optimizer.qpu import Qpu
    from svc_optimizer.relax_polish import RelaxPolish
    from svc_optimizer.service import optimizer_service

    config = OptimizerConfig()
    backends: list[Backend] = [RelaxPolish(), Milp(), Anneal(), Qpu(MockDWaveSampler)]
    server = await serve([optimizer_service(config, backends)])
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.OptimizerServiceStub(channel)
            request = _request(2, 6, 20.0, backend_preference=pb.BACKEND_QPU)
            responses = [r async for r in stub.Solve(request)]
            listed = await stub.ListSolvers(pb.ListSolversRequest())
    finally:
        await server.stop(0)
    final = responses[-1]
    assert final.status in (pb.SOLVE_STATUS_FEASIBLE, pb.SOLVE_STATUS_OPTIMAL)
    assert final.backend == pb.BACKEND_QPU
    qpu = {s.backend: s for s in final.backend_stats}[pb.BACKEND_QPU]
    assert qpu.runs == 1 and qpu.runs_failed == 0
    assert qpu.qpu.mode == pb.QpuStats.MODE_DIRECT
    assert qpu.qpu.logical_variables == 24  # 2 zones x 6 steps x 2 bits
    assert qpu.qpu.physical_qubits >= qpu.qpu.logical_variables
    assert qpu.qpu.max_chain_length >= 1 and qpu.qpu.chain_strength > 0
    assert 0.0 <= qpu.qpu.chain_break_fraction <= 1.0
    assert qpu.qpu.qpu_access_time.ToNanoseconds() > 0
    assert qpu.qpu.num_reads == 100
    assert {s.backend: s for s in listed.solvers}[pb.BACKEND_QPU].configured


async def test_a_short_rpc_deadline_shrinks_the_budget_so_the_final_update_arrives(
    optimizer: pb_grpc.OptimizerServiceStub,
) -> None:
    request = _request(10, 96, 30.0, cache_policy=pb.CACHE_POLICY_BYPASS)
    # Without the shrink the 30 s budget would outlive the RPC: DEADLINE_EXCEEDED, no final.
    responses = [r async for r in optimizer.Solve(request, timeout=3.0)]
    assert responses[-1].final
    assert responses[-1].status in (pb.SOLVE_STATUS_FEASIBLE, pb.SOLVE_STATUS_OPTIMAL)


async def test_solves_beyond_the_replica_limit_are_resource_exhausted() -> None:
    async with services(OptimizerConfig(max_concurrent_solves=1)) as built:
        server = await serve(built)
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = pb_grpc.OptimizerServiceStub(channel)
                first = stub.Solve(_request(10, 96, 30.0, cache_policy=pb.CACHE_POLICY_BYPASS))
                await first.read()
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in stub.Solve(_request(2, 8, 0.5)):
                        pass
                first.cancel()
        finally:
            await server.stop(0)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "grpc-status-details-bin" in dict(caught.value.trailing_metadata() or ())
