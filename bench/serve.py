"""Cost of meshkit.serve(): unary ping-pong rate on loopback and request validation per message.

Run: ``make bench`` (all benchmarks) or ``.venv/bin/python -m bench.serve``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from google.protobuf import duration_pb2
from hvac.common.v1.common_pb2 import ComfortBand
from hvac.optimizer.v1 import optimizer_service_pb2, schedule_problem_pb2

from bench.report import Figure, write
from meshkit import Service, serve
from meshkit.validation import violations

SERVICE = "bench.v1.EchoService"
CALLS = 3000


async def _echo(request: ComfortBand, context: Any) -> ComfortBand:
    return request


def _add(servicer: Any, server: grpc.aio.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        _echo,
        request_deserializer=ComfortBand.FromString,
        response_serializer=ComfortBand.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler}),)
    )


async def _calls_per_second() -> float:
    server = await serve([Service(SERVICE, None, _add)])
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            echo = channel.unary_unary(
                f"/{SERVICE}/Echo",
                request_serializer=ComfortBand.SerializeToString,
                response_deserializer=ComfortBand.FromString,
            )
            band = ComfortBand(lower_c=20, upper_c=24)
            for _ in range(200):  # warm up
                await echo(band)
            start = time.perf_counter()
            for _ in range(CALLS):
                await echo(band)
            return CALLS / (time.perf_counter() - start)
    finally:
        await server.stop(0)


def _validation_us(message: Any, repeat: int) -> float:
    violations(message)
    start = time.perf_counter()
    for _ in range(repeat):
        violations(message)
    return (time.perf_counter() - start) / repeat * 1e6


def _solve_request(zones: int, steps: int) -> optimizer_service_pb2.SolveRequest:
    """A valid request of the given size: the shape control sends every interval."""
    band = ComfortBand(lower_c=20, upper_c=24)
    zone_problems = [
        schedule_problem_pb2.ZoneProblem(
            zone_id=f"z{i}",
            a=0.9,
            b_c_per_kw=0.5,
            c=0.1,
            initial_temperature_c=20,
            comfort=[band] * steps,
            gain_c=[0.1] * steps,
            power_levels_kw=[0, 1, 2, 3],
        )
        for i in range(zones)
    ]
    problem = schedule_problem_pb2.ScheduleProblem(
        step=duration_pb2.Duration(seconds=900),
        horizon_steps=steps,
        zones=zone_problems,
        outdoor_temperature_c=[5.0] * steps,
        price_per_kwh=[0.1] * steps,
        peak_power_cap_kw=[10.0 * zones] * steps,
        discomfort_weight_per_kelvin_hour=1.0,
    )
    request = optimizer_service_pb2.SolveRequest(problem=problem)
    assert not violations(request), violations(request)
    return request


def main() -> int:
    rate = asyncio.run(_calls_per_second())
    small_us = _validation_us(ComfortBand(lower_c=20, upper_c=24), 20000)
    solve_10x96_ms = _validation_us(_solve_request(10, 96), 50) / 1000
    solve_30x96_ms = _validation_us(_solve_request(30, 96), 20) / 1000
    figures = [
        Figure(
            "unary ping-pong, validated",
            rate,
            "calls/s",
            ">= 2000 (loopback, one RPC out)",
            rate >= 2000,
        ),
        Figure("validation, small message", small_us, "us/msg", "<= 20", small_us <= 20),
        Figure(
            "validation, SolveRequest 10x96",
            solve_10x96_ms,
            "ms/msg",
            "<= 5 (1.5 % of a 300 ms solve)",
            solve_10x96_ms <= 5,
        ),
        Figure(
            "validation, SolveRequest 30x96",
            solve_30x96_ms,
            "ms/msg",
            "<= 15",
            solve_30x96_ms <= 15,
        ),
    ]
    write("serve", figures, {"calls": CALLS})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
