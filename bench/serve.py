"""Cost of meshkit.serve(): unary ping-pong rate on loopback and request validation per message.

Run: ``make bench`` (all benchmarks) or ``.venv/bin/python -m bench.serve``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from hvac.common.v1.common_pb2 import ComfortBand

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


def main() -> int:
    rate = asyncio.run(_calls_per_second())
    small_us = _validation_us(ComfortBand(lower_c=20, upper_c=24), 20000)
    figures = [
        Figure(
            "unary ping-pong, validated",
            rate,
            "calls/s",
            ">= 2000 (loopback, one RPC out)",
            rate >= 2000,
        ),
        Figure("validation, small message", small_us, "us/msg", "<= 20", small_us <= 20),
    ]
    write("serve", figures, {"calls": CALLS})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
