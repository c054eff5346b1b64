"""``serve()``: the one way every service starts.

A ``grpc.aio`` server bound to loopback with the gRPC health service, server reflection, the
validation interceptor, and graceful shutdown: on SIGTERM or SIGINT the health status turns
NOT_SERVING, new RPCs are refused and RPCs in flight get ``grace_s`` seconds to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from meshkit.config import env
from meshkit.metrics import start_exporter
from meshkit.validation import ValidationInterceptor

log = logging.getLogger("meshkit.server")


@dataclass(frozen=True)
class ServerConfig:
    """Where and how a service listens; every service embeds these fields."""

    host: str = env("HVAC_HOST", "127.0.0.1", "address to bind; services listen on loopback only")
    port: int = env("HVAC_PORT", 0, "TCP port; 0 picks a free one (tests)")
    grace_s: float = env("HVAC_SHUTDOWN_GRACE_S", 10.0, "seconds RPCs in flight get at shutdown")
    max_message_bytes: int = env(
        "HVAC_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, "largest request or response accepted"
    )
    max_concurrent_rpcs: int = env(
        "HVAC_MAX_CONCURRENT_RPCS", 1000, "RPCs served at once; more are RESOURCE_EXHAUSTED"
    )
    log_level: str = env("HVAC_LOG_LEVEL", "info", "debug, info, warning or error")
    metrics_port: int = env(
        "HVAC_METRICS_PORT", -1, "Prometheus /metrics on 127.0.0.1; -1 disables, 0 picks a port"
    )


@dataclass(frozen=True)
class Service:
    """A servicer and the generated function that registers it, under its full gRPC name."""

    name: str
    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]

    @classmethod
    def generated(cls, pb2: ModuleType, pb2_grpc: ModuleType, name: str, servicer: Any) -> Service:
        """The service ``name`` (``OptimizerService``) of generated ``pb2`` and ``pb2_grpc``."""
        full_name: str = pb2.DESCRIPTOR.services_by_name[name].full_name
        return cls(full_name, servicer, getattr(pb2_grpc, f"add_{name}Servicer_to_server"))

    @classmethod
    def unimplemented(cls, pb2: ModuleType, pb2_grpc: ModuleType, name: str) -> Service:
        """The service ``name`` with every RPC answering UNIMPLEMENTED (after validation).

        For contracts published ahead of their implementation: honest about what is missing,
        with a message naming the method, rather than pretending to work.
        """
        descriptor = pb2.DESCRIPTOR.services_by_name[name]
        methods = {
            m.name: _unimplemented(f"{descriptor.full_name}/{m.name}") for m in descriptor.methods
        }
        servicer = type(f"Unimplemented{name}", (getattr(pb2_grpc, f"{name}Servicer"),), methods)
        return cls.generated(pb2, pb2_grpc, name, servicer())


def _unimplemented(method: str) -> Callable[..., Any]:
    async def answer(self: Any, request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")

    return answer


@dataclass
class RunningServer:
    """A started server: its bound port, and its health servicer for status changes."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    services: Sequence[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.services]:
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        """Turn NOT_SERVING, refuse new RPCs, give RPCs in flight ``grace_s`` seconds."""
        await self.set_serving(False)
        await self.server.stop(grace_s)


async def serve(
    services: Sequence[Service],
    config: ServerConfig | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> RunningServer:
    """Start a server for ``services`` and return once it is accepting RPCs."""
    config = config or ServerConfig()
    server = grpc.aio.server(
        interceptors=[*interceptors, ValidationInterceptor()],
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for service in services:
        service.add_to_server(service.servicer, server)
    names = [s.name for s in services]
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"cannot bind {config.host}:{config.port}")
    await server.start()
    running = RunningServer(server=server, port=port, health=health, services=names)
    await running.set_serving(True)
    log.info("serving", extra={"services": names, "port": port})
    return running


async def serve_until_signalled(
    services: Sequence[Service], config: ServerConfig, on_ready: Callable[[int], None] | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    running = await serve(services, config)
    exporter = start_exporter(config.metrics_port)
    if on_ready is not None:
        on_ready(running.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down", extra={"grace_s": config.grace_s})
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await running.stop(config.grace_s)
        if exporter is not None:
            exporter.close()
    log.info("stopped")
