"""A whole local mesh (both regions, real Envoy, PostgreSQL, Redis) for the e2e tests.

``mesh`` is module-scoped: one mesh per test module, stopped at teardown even when a test failed.
It runs on the session's PostgreSQL (a database of its own) and Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from meshctl.up import Mesh
from meshkit.testing import PostgresServer, RedisServer
from tests.e2e.e2e_helpers import probe_topology


@pytest.fixture(scope="module")
def mesh_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database for one mesh (on the session's server), dropped afterwards."""
    url = asyncio.run(postgres_server.create_database("mesh"))
    try:
        yield url
    finally:
        asyncio.run(postgres_server.drop_database(url))


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, mesh_database: str, redis_server: RedisServer
) -> Iterator[Mesh]:
    running = Mesh(
        tmp_path_factory.mktemp("mesh"),
        probe_topology(),
        database_url=mesh_database,
        redis_url=redis_server.url,
    )
    try:
        running.start(timeout_s=120)
        yield running
    finally:
        running.stop()
