"""Cost of the mesh: one Envoy hop with mutual TLS versus calling a service directly.

Brings up the local mesh with one bench service (an echo, run as ``python -m bench.mesh
--echo --port N`` under the supervisor like any service) and measures, in one run, from one
client: unary ping-pong latency (p50, p99) and rate, and the rate of a server stream of small
messages, directly on the service's loopback port and through the us-east ingress (mTLS, RBAC,
rate limit, retries, XFCC), alternating in rounds; figures are medians over the rounds.
Goals: Envoy adds at most 0.3 ms at p99 per hop, and a stream through the mesh keeps at least
80 % of the direct rate. On two cores the client, the service and Envoy compete for CPU, so
tail figures depend on what else runs (the 1-minute load average is recorded with them).

Run: ``make bench`` (all benchmarks) or ``.venv/bin/python -m bench.mesh``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import wrappers_pb2

from bench.report import Figure, write

SERVICE = "hvac.bench.v1.EchoService"
PAYLOAD = b"x" * 100
ROUNDS = 5  # direct and meshed alternate, so load from elsewhere hits both alike
UNARY_CALLS = 1000  # per round and path
STREAM_MESSAGES = 10000  # per round and path
WARMUP = 300


# --------------------------------------------------------------------- the echo service


async def _echo(request: wrappers_pb2.BytesValue, context: Any) -> wrappers_pb2.BytesValue:
    return request


async def _stream(
    request: wrappers_pb2.Int64Value, context: Any
) -> AsyncIterator[wrappers_pb2.BytesValue]:
    message = wrappers_pb2.BytesValue(value=PAYLOAD)
    for _ in range(request.value):
        yield message


def _register(servicer: Any, server: grpc.aio.Server) -> None:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(
            _echo,
            request_deserializer=wrappers_pb2.BytesValue.FromString,
            response_serializer=wrappers_pb2.BytesValue.SerializeToString,
        ),
        "Stream": grpc.unary_stream_rpc_method_handler(
            _stream,
            request_deserializer=wrappers_pb2.Int64Value.FromString,
            response_serializer=wrappers_pb2.BytesValue.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def serve_echo(argv: list[str]) -> int:
    from meshkit import ServerConfig, Service, run_service, static_services

    return run_service(
        "bench-echo",
        ServerConfig,
        lambda config: static_services(Service(SERVICE, None, _register)),
        argv,
    )


# --------------------------------------------------------------------- measuring


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def _unary(channel: grpc.Channel) -> tuple[float, float, float]:
    """(p50 us, p99 us, calls/s) of sequential unary calls."""
    echo = channel.unary_unary(
        f"/{SERVICE}/Echo",
        request_serializer=wrappers_pb2.BytesValue.SerializeToString,
        response_deserializer=wrappers_pb2.BytesValue.FromString,
    )
    request = wrappers_pb2.BytesValue(value=PAYLOAD)
    for _ in range(WARMUP):
        echo(request, timeout=10)
    latencies = []
    started = time.perf_counter()
    for _ in range(UNARY_CALLS):
        before = time.perf_counter()
        echo(request, timeout=10)
        latencies.append((time.perf_counter() - before) * 1e6)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return _percentile(latencies, 0.5), _percentile(latencies, 0.99), UNARY_CALLS / elapsed


def _streamed_per_s(channel: grpc.Channel) -> float:
    stream = channel.unary_stream(
        f"/{SERVICE}/Stream",
        request_serializer=wrappers_pb2.Int64Value.SerializeToString,
        response_deserializer=wrappers_pb2.BytesValue.FromString,
    )
    for _ in stream(wrappers_pb2.Int64Value(value=WARMUP), timeout=60):
        pass
    started = time.perf_counter()
    received = sum(1 for _ in stream(wrappers_pb2.Int64Value(value=STREAM_MESSAGES), timeout=120))
    return received / (time.perf_counter() - started)


def main() -> int:
    from meshctl.status import ClientIdentity, mesh_channel
    from meshctl.topology import Caller, Rule, ServiceSpec, Topology
    from meshctl.up import ADMIN_USER, Mesh

    load_1min = os.getloadavg()[0]
    echo = ServiceSpec("echo", SERVICE, ("-m", "bench.mesh", "--echo"))
    topology = Topology(services=(echo,), rules=(Rule(Caller.USER, "echo"),))
    with tempfile.TemporaryDirectory(prefix="bench-mesh-") as state:
        mesh = Mesh(Path(state), topology)
        direct_rounds: list[tuple[float, float, float, float]] = []
        meshed_rounds: list[tuple[float, float, float, float]] = []
        try:
            mesh.start()
            direct_address = f"127.0.0.1:{mesh.ports['us-east'].services['echo']}"
            paths = mesh.pki.paths(f"user.{ADMIN_USER}")
            identity = ClientIdentity(mesh.pki.ca_cert, paths.cert, paths.key)
            ingress = f"127.0.0.1:{mesh.ports['us-east'].ingress}"
            with (
                grpc.insecure_channel(direct_address) as plain,
                mesh_channel(ingress, "echo", identity) as meshed_channel,
            ):
                for _ in range(ROUNDS):
                    direct_rounds.append((*_unary(plain), _streamed_per_s(plain)))
                    meshed_rounds.append((*_unary(meshed_channel), _streamed_per_s(meshed_channel)))
        finally:
            mesh.stop()
    direct = [statistics.median(r[i] for r in direct_rounds) for i in range(4)]
    meshed = [statistics.median(r[i] for r in meshed_rounds) for i in range(4)]
    added_p99 = statistics.median(
        m[1] - d[1] for d, m in zip(direct_rounds, meshed_rounds, strict=True)
    )
    added_p50 = statistics.median(
        m[0] - d[0] for d, m in zip(direct_rounds, meshed_rounds, strict=True)
    )
    stream_share = statistics.median(
        100 * m[3] / d[3] for d, m in zip(direct_rounds, meshed_rounds, strict=True)
    )
    figures = [
        Figure("unary p50, direct", direct[0], "us", "(reference)"),
        Figure("unary p99, direct", direct[1], "us", "(reference)"),
        Figure("unary p50, through Envoy mTLS", meshed[0], "us", "(reference)"),
        Figure("unary p99, through Envoy mTLS", meshed[1], "us", "(reference)"),
        Figure("unary p50 added by one hop", added_p50, "us", "(reference)"),
        Figure("unary p99 added by one hop", added_p99, "us", "<= 300", added_p99 <= 300),
        Figure("unary rate, direct", direct[2], "calls/s", "(reference)"),
        Figure("unary rate, through Envoy mTLS", meshed[2], "calls/s", "(reference)"),
        Figure("streamed rate, direct", direct[3], "msgs/s", "(reference)"),
        Figure("streamed rate, through Envoy mTLS", meshed[3], "msgs/s", "(reference)"),
        Figure(
            "streamed rate through the mesh", stream_share, "% direct", ">= 80", stream_share >= 80
        ),
    ]
    write(
        "mesh",
        figures,
        {
            "payload_bytes": len(PAYLOAD),
            "rounds": ROUNDS,
            "unary_calls_per_round": UNARY_CALLS,
            "stream_messages_per_round": STREAM_MESSAGES,
            "figures": "median over rounds; added latency is meshed minus direct per round",
            "client": "grpcio sync, one call at a time",
            "envoy": "1.40, one worker, mTLS downstream, plaintext loopback upstream",
            # Other work on the machine widens p99; read the tail figures against this.
            "load_average_1min": round(load_1min, 2),
        },
    )
    return sum(1 for f in figures if f.met is False)


if __name__ == "__main__":
    if "--echo" in sys.argv:
        raise SystemExit(serve_echo([a for a in sys.argv[1:] if a != "--echo"]))
    raise SystemExit(main())
