"""Identical problems are answered from Redis, as `CachePolicy` says."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio
from google.protobuf import duration_pb2
from hvac.optimizer.v1 import optimizer_service_pb2 as pb
from hvac.optimizer.v1 import optimizer_service_pb2_grpc as pb_grpc

from meshkit import serve
from meshkit.testing import RedisNamespace
from svc_optimizer.cache import ResultCache
from svc_optimizer.config import OptimizerConfig
from svc_optimizer.instances import generated_problem
from svc_optimizer.milp import Milp
from svc_optimizer.relax_polish import RelaxPolish
from svc_optimizer.service import optimizer_service


async def _stub_with(cache: ResultCache) -> AsyncIterator[pb_grpc.OptimizerServiceStub]:
    service = optimizer_service(OptimizerConfig(), [RelaxPolish(), Milp()], cache)
    server = await serve([service])
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield pb_grpc.OptimizerServiceStub(channel)
    finally:
        await server.stop(0)
        await cache.close()


@pytest.fixture
async def optimizer(redis_namespace: RedisNamespace) -> AsyncIterator[pb_grpc.OptimizerServiceStub]:
    cache = ResultCache.from_url(redis_namespace.url, redis_namespace.prefix, ttl_s=60)
    async for stub in _stub_with(cache):
        yield stub


def _request(
    budget_ms: int, cache_policy: pb.CachePolicy.ValueType = pb.CACHE_POLICY_UNSPECIFIED
) -> pb.SolveRequest:
    deadline = duration_pb2.Duration()
    deadline.FromMilliseconds(budget_ms)
    return pb.SolveRequest(
        problem=generated_problem(3, 24, 3), deadline=deadline, cache_policy=cache_policy
    )


async def _final(
    stub: pb_grpc.OptimizerServiceStub, request: pb.SolveRequest
) -> list[pb.SolveResponse]:
    return [r async for r in stub.Solve(request)]


async def _keys(client: redis.asyncio.Redis, namespace: RedisNamespace) -> list[bytes]:
    return [k async for k in client.scan_iter(match=namespace.pattern)]


async def test_an_identical_request_is_answered_from_the_cache(
    optimizer: pb_grpc.OptimizerServiceStub,
    redis_client: redis.asyncio.Redis,
    redis_namespace: RedisNamespace,
) -> None:
    first = (await _final(optimizer, _request(300)))[-1]
    assert not first.from_cache
    assert await _keys(redis_client, redis_namespace)
    (again,) = await _final(optimizer, _request(300))
    assert again.from_cache and again.final and again.sequence_number == 1
    assert again.schedule == first.schedule
    assert again.objective == first.objective
    assert again.problem_sha256 == first.problem_sha256
    assert all(s.skipped and s.runs == 0 for s in again.backend_stats)


async def test_a_longer_budget_is_not_served_a_result_found_in_less_time(
    optimizer: pb_grpc.OptimizerServiceStub,
) -> None:
    first = (await _final(optimizer, _request(200)))[-1]
    if first.status in (pb.SOLVE_STATUS_OPTIMAL, pb.SOLVE_STATUS_INFEASIBLE):
        pytest.skip("a definitive answer matches any budget")
    longer = (await _final(optimizer, _request(400)))[-1]
    assert not longer.from_cache
    shorter = await _final(optimizer, _request(100))
    assert len(shorter) == 1 and shorter[0].from_cache


async def test_bypass_neither_reads_nor_writes_the_cache(
    optimizer: pb_grpc.OptimizerServiceStub,
    redis_client: redis.asyncio.Redis,
    redis_namespace: RedisNamespace,
) -> None:
    bypass = _request(200, cache_policy=pb.CACHE_POLICY_BYPASS)
    assert not (await _final(optimizer, bypass))[-1].from_cache
    assert await _keys(redis_client, redis_namespace) == []
    await _final(optimizer, _request(200))
    assert not (await _final(optimizer, bypass))[-1].from_cache


async def test_an_unreachable_redis_does_not_fail_the_solve() -> None:
    cache = ResultCache.from_url("redis://127.0.0.1:9/0", "nowhere:", ttl_s=60)
    async for stub in _stub_with(cache):
        responses = await _final(stub, _request(200))
        assert responses[-1].status == pb.SOLVE_STATUS_FEASIBLE or responses[-1].status == (
            pb.SOLVE_STATUS_OPTIMAL
        )
        assert not responses[-1].from_cache
