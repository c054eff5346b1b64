"""Numbered SQL migrations for one PostgreSQL schema, applied at start under an advisory lock.

A service keeps its schema's migrations as files ``NNNN_what.sql`` (``0001_registry.sql``) in
one folder. :func:`migrate` creates the schema if needed, takes a session advisory lock named
after the schema (so instances starting together apply each file once, one after the other),
and applies, in number order, every file not yet recorded in ``<schema>.schema_migrations``.
Each file runs in its own transaction together with its record: it is applied whole or not at
all. A recorded file whose content changed since is refused (``MigrationError``): migrations
are append-only, a fix is a new file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

__all__ = ["Migration", "MigrationError", "load_migrations", "migrate"]

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class MigrationError(RuntimeError):
    """The migration files are inconsistent, or disagree with what the database recorded."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: its number, name, text and SHA-256 of the text (hex)."""

    version: int
    name: str
    sql: str
    checksum: str


def load_migrations(folder: Path) -> list[Migration]:
    """The ``NNNN_name.sql`` files of ``folder`` in number order.

    Raises MigrationError for a ``.sql`` file that does not follow the naming rule, for two files
    with one number, or for a gap in the numbering (1, 2, 4): either would make the order in
    which instances apply them ambiguous.
    """
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        text = path.read_text(encoding="utf-8")
        found.append(
            Migration(
                version=int(match.group(1)),
                name=match.group(2),
                sql=text,
                checksum=hashlib.sha256(text.encode()).hexdigest(),
            )
        )
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration numbers must run 1, 2, 3, ... without gaps or repeats; "
                f"expected {expected:04d}, found {migration.version:04d}_{migration.name}"
            )
    return found


async def migrate(dsn_or_conn: str | asyncpg.Connection, schema: str, folder: Path) -> list[int]:
    """Apply the pending migrations of ``folder`` to ``schema``; return the versions applied.

    Safe to call from several processes at once: they serialise on an advisory lock, and each
    file is applied exactly once. Returns ``[]`` when the schema is up to date.
    """
    if not _SCHEMA.match(schema):
        raise MigrationError(f"invalid schema name {schema!r}")
    migrations = load_migrations(folder)
    own = isinstance(dsn_or_conn, str)
    conn: asyncpg.Connection = (
        await asyncpg.connect(dsn_or_conn) if isinstance(dsn_or_conn, str) else dsn_or_conn
    )
    lock_key = f"meshkit.migrations.{schema}"
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", lock_key)
        try:
            return await _apply(conn, schema, migrations)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", lock_key)
    finally:
        if own:
            await conn.close()


async def _apply(conn: asyncpg.Connection, schema: str, migrations: list[Migration]) -> list[int]:
    table = f"{schema}.schema_migrations"
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " version integer PRIMARY KEY,"
        " name text NOT NULL,"
        " checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    recorded = {
        row["version"]: row["checksum"]
        for row in await conn.fetch(f"SELECT version, checksum FROM {table}")
    }
    known = {m.version for m in migrations}
    unknown = sorted(set(recorded) - known)
    if unknown:
        raise MigrationError(
            f"schema {schema} has migrations {unknown} that this code does not know; "
            "it was migrated by a newer release"
        )
    applied: list[int] = []
    for migration in migrations:
        if migration.version in recorded:
            if recorded[migration.version] != migration.checksum:
                raise MigrationError(
                    f"{migration.version:04d}_{migration.name}.sql changed after it was applied "
                    f"to schema {schema}; add a new migration instead"
                )
            continue
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {table} (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        applied.append(migration.version)
    return applied
