"""The PostgreSQL/Redis test backends: isolation, cleanup, external and embedded modes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio

from meshkit.testing import (
    DATABASE_URL_ENV,
    REDIS_URL_ENV,
    BackendChoice,
    BackendMode,
    PostgresServer,
    RedisNamespace,
    RedisServer,
    choose_backend,
    database_name_from_dsn,
    dsn_with_database,
    process_is_alive,
    redis_glob_escape,
    unique_database_name,
    unique_key_prefix,
)
from meshkit.testing._procs import _proc_state

integration = pytest.mark.integration

# ----------------------------------------------------------------------------- pure helpers


def test_choose_backend_prefers_the_environment_url() -> None:
    url = "postgresql://u@db:5432/x"
    assert choose_backend({"DATABASE_URL": f"  {url}\n"}, "DATABASE_URL") == BackendChoice(
        BackendMode.EXTERNAL, url
    )
    assert choose_backend({"DATABASE_URL": "  "}, "DATABASE_URL") == BackendChoice(
        BackendMode.EMBEDDED
    )
    assert choose_backend({"REDIS_URL": url}, "DATABASE_URL").mode is BackendMode.EMBEDDED


def test_dsn_with_database_keeps_everything_but_the_database() -> None:
    assert (
        dsn_with_database("postgresql://u:p%40w@h:5433/postgres?sslmode=disable", "test_1")
        == "postgresql://u:p%40w@h:5433/test_1?sslmode=disable"
    )
    assert (
        dsn_with_database("postgresql://postgres:@/postgres?host=/tmp/pg%20x", "test_2")
        == "postgresql://postgres:@/test_2?host=/tmp/pg%20x"
    )
    assert dsn_with_database("postgres://h?dbname=a&port=1", "b") == "postgres://h/b?port=1"
    with pytest.raises(ValueError, match="postgresql://"):
        dsn_with_database("host=h dbname=a", "b")
    with pytest.raises(ValueError):
        dsn_with_database("redis://h/0", "b")


def test_database_name_from_dsn() -> None:
    assert database_name_from_dsn("postgresql://h/test_ab?host=/s") == "test_ab"
    assert database_name_from_dsn("postgresql://h/a?dbname=b") == "b"
    assert database_name_from_dsn("postgresql://h") is None


def test_unique_names_are_unique_and_well_formed() -> None:
    names = {unique_database_name() for _ in range(100)}
    assert len(names) == 100
    assert all(n.startswith("test_") and len(n) == 21 and n.islower() for n in names)
    prefixes = {unique_key_prefix("svc") for _ in range(100)}
    assert len(prefixes) == 100
    assert all(p.startswith("svc:") and p.endswith(":") and len(p) == 21 for p in prefixes)
    with pytest.raises(ValueError):
        unique_database_name("Bad-Name")
    with pytest.raises(ValueError):
        unique_database_name("x" * 50)
    with pytest.raises(ValueError):
        unique_key_prefix("a*")


def test_redis_glob_escape() -> None:
    assert redis_glob_escape("test:ab:") == "test:ab:"
    assert redis_glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"
    assert RedisNamespace("redis://h", "p[1]:").pattern == "p\\[1\\]:*"
    assert RedisNamespace("redis://h", "test:ab:").key("x", "y") == "test:ab:x:y"


def test_proc_state_parses_comm_with_parentheses() -> None:
    assert _proc_state("42 (a) b) Z 1 42 42") == "Z"
    assert _proc_state("7 (redis-server) S 1 7") == "S"
    assert process_is_alive(os.getpid())


# ----------------------------------------------------------------------------- PostgreSQL


@integration
async def test_each_test_gets_its_own_database(
    pg: asyncpg.Connection, database_url: str, postgres_server: PostgresServer
) -> None:
    name = database_name_from_dsn(database_url)
    assert name is not None and name.startswith("test_")
    assert await pg.fetchval("SELECT current_database()") == name
    await pg.execute("CREATE TABLE probe (id int)")
    await pg.execute("INSERT INTO probe VALUES (1)")

    async with postgres_server.database() as other_url:
        other_name = database_name_from_dsn(other_url)
        assert other_name is not None and other_name != name
        other = await asyncpg.connect(other_url)
        try:
            assert await other.fetchval("SELECT current_database()") == other_name
            assert await other.fetchval("SELECT to_regclass('public.probe')") is None
        finally:
            await other.close()
    assert not await postgres_server.database_exists(other_name)
    assert await postgres_server.database_exists(name)
    assert await pg.fetchval("SELECT count(*) FROM probe") == 1


@integration
async def test_database_is_dropped_even_with_open_connections(
    postgres_server: PostgresServer,
) -> None:
    async with postgres_server.database() as url:
        name = database_name_from_dsn(url)
        assert name is not None
        leaked = await asyncpg.connect(url)  # a test that forgot to close its connection
        await leaked.execute("CREATE TABLE t (id int)")
        assert await postgres_server.database_exists(name)
    assert not await postgres_server.database_exists(name)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
        await leaked.fetchval("SELECT 1")
    await leaked.close()


@integration
async def test_database_is_dropped_when_the_body_fails(postgres_server: PostgresServer) -> None:
    name = None
    with pytest.raises(RuntimeError, match="boom"):
        async with postgres_server.database() as url:
            name = database_name_from_dsn(url)
            raise RuntimeError("boom")
    assert name is not None
    assert not await postgres_server.database_exists(name)


@integration
async def test_only_databases_it_created_can_be_dropped(postgres_server: PostgresServer) -> None:
    admin_db = database_name_from_dsn(postgres_server.admin_url) or "postgres"
    with pytest.raises(ValueError, match="refusing"):
        await postgres_server.drop_database(postgres_server.admin_url)
    assert await postgres_server.database_exists(admin_db)


# ----------------------------------------------------------------------------- Redis


@integration
async def test_redis_keys_are_namespaced_and_cleaned(
    redis_namespace: RedisNamespace, redis_client: redis.asyncio.Redis, redis_server: RedisServer
) -> None:
    assert redis_namespace.url == redis_server.url
    assert redis_namespace.prefix.startswith("test:")
    mine = [redis_namespace.key(str(i)) for i in range(1200)]  # more than one UNLINK batch
    await redis_client.mset(dict.fromkeys(mine, b"v"))

    neighbour = redis_server.new_namespace()
    assert neighbour.prefix != redis_namespace.prefix
    await redis_client.set(neighbour.key("kept"), b"n")
    try:
        assert await redis_server.clear_namespace(redis_namespace) == len(mine)
        assert await redis_client.exists(*mine) == 0
        assert await redis_client.get(neighbour.key("kept")) == b"n"
    finally:
        assert await redis_server.clear_namespace(neighbour) == 1
    assert await redis_client.exists(neighbour.key("kept")) == 0


@integration
async def test_redis_namespace_prefix_is_matched_literally(
    redis_server: RedisServer, redis_client: redis.asyncio.Redis
) -> None:
    base = unique_key_prefix()
    tricky = RedisNamespace(redis_server.url, base + "a*[b]:")
    lookalike = base + "aXb:1"  # would match the unescaped glob  <base>a*[b]:*
    await redis_client.set(tricky.key("1"), b"1")
    await redis_client.set(lookalike, b"2")
    try:
        assert await redis_server.clear_namespace(tricky) == 1
        assert await redis_client.get(lookalike) == b"2"
    finally:
        await redis_client.delete(lookalike, tricky.key("1"))


@integration
async def test_namespace_is_cleaned_when_the_body_fails(
    redis_server: RedisServer, redis_client: redis.asyncio.Redis
) -> None:
    key = None
    with pytest.raises(RuntimeError, match="boom"):
        async with redis_server.namespace() as ns:
            key = ns.key("x")
            await redis_client.set(key, b"1")
            raise RuntimeError("boom")
    assert key is not None
    assert await redis_client.exists(key) == 0


# ----------------------------------------------------------------------------- both modes


@integration
async def test_embedded_backends_start_work_and_leave_nothing_behind() -> None:
    """Forces embedded servers whatever DATABASE_URL/REDIS_URL say."""
    started = time.monotonic()
    with PostgresServer.embedded() as pg_server, RedisServer.embedded() as redis_srv:
        startup = time.monotonic() - started
        assert startup < 30, f"embedded servers took {startup:.1f}s to start"
        assert pg_server.is_embedded and redis_srv.is_embedded
        pg_pid, pg_dir = pg_server.pid, pg_server.data_dir
        redis_pid, redis_dir = redis_srv.pid, redis_srv.data_dir
        assert pg_pid is not None and pg_dir is not None and process_is_alive(pg_pid)
        assert redis_pid is not None and redis_dir is not None and process_is_alive(redis_pid)
        assert "host=" + str(pg_dir) in pg_server.admin_url  # Unix socket in its own dir
        assert redis_srv.url == f"unix://{redis_dir}/redis.sock"
        assert pg_server.admin_url != os.environ.get(DATABASE_URL_ENV)

        async with pg_server.database() as url:
            conn = await asyncpg.connect(url)
            try:
                assert await conn.fetchval("SELECT 40 + 2") == 42
            finally:
                await conn.close()
        async with redis_srv.namespace() as ns:
            client = redis.asyncio.Redis.from_url(ns.url)
            try:
                assert await client.ping() is True
                assert await client.set(ns.key("k"), b"v")
                assert (await client.info("server"))["tcp_port"] == 0
            finally:
                await client.aclose()

    assert not pg_server.running and not redis_srv.running
    assert not process_is_alive(pg_pid), "embedded postgres still running"
    assert not process_is_alive(redis_pid), "embedded redis still running"
    assert not pg_dir.exists() and not redis_dir.exists()
    pg_server.stop()  # idempotent
    redis_srv.stop()


def _external_url(variable: str) -> str:
    url = choose_backend(os.environ, variable).url
    assert url is not None
    return url


def _needs(*variables: str) -> pytest.MarkDecorator:
    missing = [v for v in variables if choose_backend(os.environ, v).url is None]
    reason = f"{' and '.join(missing)} not set: external-server mode is not exercised in this run"
    return pytest.mark.skipif(bool(missing), reason=reason)


@integration
@_needs(DATABASE_URL_ENV)
async def test_postgres_fixture_uses_database_url_when_set(
    postgres_server: PostgresServer, pg: asyncpg.Connection
) -> None:
    url = _external_url(DATABASE_URL_ENV)
    assert not postgres_server.is_embedded and postgres_server.pid is None
    assert postgres_server.admin_url == url
    port = await pg.fetchval("SELECT inet_server_port()")
    assert port == (urlsplit(url).port or 5432)


@integration
@_needs(REDIS_URL_ENV)
async def test_redis_fixture_uses_redis_url_when_set(
    redis_server: RedisServer, redis_client: redis.asyncio.Redis
) -> None:
    url = _external_url(REDIS_URL_ENV)
    assert not redis_server.is_embedded and redis_server.pid is None
    assert redis_server.url == url
    info = await redis_client.info("server")
    assert info["tcp_port"] == (urlsplit(url).port or 6379)


# ----------------------------------------------------------------------------- fixtures, end to end

_PROBE = """
import json, os

import redis.asyncio

from meshkit.testing import database_name_from_dsn

SEEN = {}


async def test_a(postgres_server, redis_server, database_url, pg, redis_namespace, redis_client):
    await pg.execute("CREATE TABLE probe (id int)")
    await redis_client.set(redis_namespace.key("k"), b"v")
    SEEN.update(database=database_name_from_dsn(database_url), prefix=redis_namespace.prefix)


async def test_b(postgres_server, redis_server):
    assert SEEN, "test_a did not run"
    assert not await postgres_server.database_exists(SEEN["database"])
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        assert await client.keys(SEEN["prefix"] + "*") == []
    finally:
        await client.aclose()
    with open(os.environ["PROBE_OUT"], "w") as out:
        json.dump(
            dict(
                SEEN,
                pg_embedded=postgres_server.is_embedded,
                pg_pid=postgres_server.pid,
                pg_dir=str(postgres_server.data_dir),
                redis_embedded=redis_server.is_embedded,
                redis_pid=redis_server.pid,
                redis_dir=str(redis_server.data_dir),
            ),
            out,
        )
"""


def _run_probe_session(tmp_path: Path, env: dict[str, str]) -> dict[str, object]:
    """Run the real conftest fixtures in a separate pytest session; return what it saw."""
    shutil.copy(Path(__file__).parents[1] / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(_PROBE)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    out = tmp_path / "probe.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_probe.py"],
        cwd=tmp_path,
        env={**env, "PROBE_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout
    seen: dict[str, object] = json.loads(out.read_text())
    return seen


@integration
async def test_fixtures_clean_up_in_embedded_mode(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (DATABASE_URL_ENV, REDIS_URL_ENV)}
    seen = await asyncio.to_thread(_run_probe_session, tmp_path, env)
    assert seen["pg_embedded"] is True and seen["redis_embedded"] is True
    for pid_key, dir_key in (("pg_pid", "pg_dir"), ("redis_pid", "redis_dir")):
        pid = seen[pid_key]
        assert isinstance(pid, int)
        assert not process_is_alive(pid), f"{pid_key} {pid} outlived the session"
        assert not Path(str(seen[dir_key])).exists(), f"{dir_key} was not removed"


@integration
@_needs(DATABASE_URL_ENV, REDIS_URL_ENV)
async def test_fixtures_clean_up_in_external_mode(tmp_path: Path) -> None:
    database_url = _external_url(DATABASE_URL_ENV)
    redis_url = _external_url(REDIS_URL_ENV)
    seen = await asyncio.to_thread(_run_probe_session, tmp_path, dict(os.environ))
    assert seen["pg_embedded"] is False and seen["redis_embedded"] is False
    conn = await asyncpg.connect(database_url)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", seen["database"]
        )
    finally:
        await conn.close()
    assert found == 0
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await client.keys(redis_glob_escape(str(seen["prefix"])) + "*") == []
    finally:
        await client.aclose()
