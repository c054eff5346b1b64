"""The migration runner (meshkit.migrations) on the control schema and on scratch folders."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from meshkit.migrations import MigrationError, load_migrations, migrate
from svc_control.store import MIGRATIONS

pytestmark = pytest.mark.integration


async def test_instances_starting_together_apply_each_migration_once(
    database_url: str, pg: asyncpg.Connection
) -> None:
    results = await asyncio.gather(
        *(migrate(database_url, "control", MIGRATIONS) for _ in range(3))
    )
    expected = [m.version for m in load_migrations(MIGRATIONS)]
    assert sorted(results, key=len) == [[], [], expected]
    recorded = await pg.fetch("SELECT version FROM control.schema_migrations ORDER BY version")
    assert [r["version"] for r in recorded] == expected
    assert await migrate(database_url, "control", MIGRATIONS) == []


async def test_a_failing_migration_leaves_nothing_behind(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE scratch.a (x int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE scratch.b (x int); SELECT 1/0;")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(database_url, "scratch", tmp_path)
    assert await pg.fetchval("SELECT to_regclass('scratch.a') IS NOT NULL")
    assert await pg.fetchval("SELECT to_regclass('scratch.b') IS NULL")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE scratch.b (x int);")
    assert await migrate(database_url, "scratch", tmp_path) == [2]


async def test_an_applied_migration_that_changed_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE scratch.a (x int);")
    await migrate(database_url, "scratch", tmp_path)
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE scratch.a (x bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(database_url, "scratch", tmp_path)


def test_numbering_must_run_without_gaps_and_names_must_follow_the_rule(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("")
    (tmp_path / "0003_c.sql").write_text("")
    with pytest.raises(MigrationError, match="expected 0002"):
        load_migrations(tmp_path)
    (tmp_path / "0003_c.sql").unlink()
    (tmp_path / "2_b.sql").write_text("")
    with pytest.raises(MigrationError, match="NNNN_lower_snake"):
        load_migrations(tmp_path)
