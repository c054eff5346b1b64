"""Fixtures of the control service tests: real instances in process on one fresh database.

Two instances sharing a database and a Redis namespace stand for the two regions after a
failover: everything a device session resumes from lives in PostgreSQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from hvac.control.v1 import control_service_pb2_grpc as ctl_grpc

from meshkit import RunningServer, serve
from meshkit.testing import RedisNamespace
from svc_control.config import ControlConfig
from svc_control.service import ControlServicer, services


@dataclass
class Instance:
    """One running control service: its stub, and its servicer for the internal API."""

    server: RunningServer
    stub: ctl_grpc.ControlServiceStub
    servicer: ControlServicer


@contextlib.asynccontextmanager
async def running(
    database_url: str, namespace: RedisNamespace, **settings: Any
) -> AsyncIterator[Instance]:
    settings.setdefault("control_loop", False)  # these tests issue commands themselves
    config = ControlConfig(
        database_url=database_url,
        redis_url=namespace.url,
        redis_key_prefix=namespace.prefix,
        **settings,
    )
    async with services(config) as built:
        server = await serve(built, config)
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                yield Instance(server, ctl_grpc.ControlServiceStub(channel), built[0].servicer)
        finally:
            await server.stop(0)


InstanceFactory = Callable[..., contextlib.AbstractAsyncContextManager[Instance]]


@pytest.fixture
def instance_factory(database_url: str, redis_namespace: RedisNamespace) -> InstanceFactory:
    """Start more instances on the test's database: ``async with instance_factory() as i``."""

    def start(**settings: Any) -> contextlib.AbstractAsyncContextManager[Instance]:
        return running(database_url, redis_namespace, **settings)

    return start


@pytest.fixture
async def control(instance_factory: InstanceFactory) -> AsyncIterator[Instance]:
    """One control service on a fresh database."""
    async with instance_factory() as instance:
        yield instance
