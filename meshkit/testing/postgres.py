"""A real PostgreSQL server for tests, external or embedded (``pgserver``).

:func:`postgres_server_from_env` uses the server named by ``DATABASE_URL`` when it
is set and otherwise starts an embedded one. Each test gets a fresh database
``test_<hex>`` from :meth:`PostgresServer.database`, dropped afterwards.
Importing this module does not import ``pgserver``; it is needed only when an
embedded server is started.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import signal
import warnings
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg

from meshkit.testing._common import DATABASE_URL_ENV, _redact_url, choose_backend
from meshkit.testing._procs import OwnedServer, _private_tempdir, _remove_tree, _stop_pid

__all__ = [
    "PostgresServer",
    "database_name_from_dsn",
    "dsn_with_database",
    "postgres_server_from_env",
    "unique_database_name",
]

_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
_DSN_DATABASE_PARAMS = frozenset({"dbname", "database"})


# --------------------------------------------------------------------------- pure helpers


def unique_database_name(prefix: str = "test") -> str:
    """Return ``<prefix>_<16 hex digits>``, a valid unquoted PostgreSQL identifier.

    Raises ValueError if ``prefix`` would make the name invalid or longer than 63 bytes.
    """
    name = f"{prefix}_{secrets.token_hex(8)}"
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"invalid database name prefix: {prefix!r}")
    return name


def _split_postgres_url(dsn: str) -> tuple[str, str, str, str, str]:
    parts = urlsplit(dsn)
    if parts.scheme not in _POSTGRES_SCHEMES:
        raise ValueError(
            "expected a postgresql:// URL, got a DSN with scheme " + repr(parts.scheme)
        )
    return parts.scheme, parts.netloc, parts.path, parts.query, parts.fragment


def _query_without_database(query: str) -> tuple[str, str | None]:
    kept: list[str] = []
    database: str | None = None
    for item in query.split("&") if query else []:
        key, _, value = item.partition("=")
        if unquote(key) in _DSN_DATABASE_PARAMS:
            database = unquote(value)
        else:
            kept.append(item)
    return "&".join(kept), database


def dsn_with_database(dsn: str, database: str) -> str:
    """Return ``dsn`` (a ``postgresql://`` URL) pointing at ``database`` instead.

    Credentials, host, port and other query parameters (such as ``host=/socket/dir``)
    are kept verbatim; a ``dbname``/``database`` query parameter is removed so that
    the path is authoritative. Raises ValueError for anything but a postgres URL.
    """
    scheme, netloc, _path, query, fragment = _split_postgres_url(dsn)
    query, _ = _query_without_database(query)
    return urlunsplit((scheme, netloc, "/" + quote(database, safe=""), query, fragment))


def database_name_from_dsn(dsn: str) -> str | None:
    """Return the database a ``postgresql://`` URL names, or None when it names none.

    A ``dbname``/``database`` query parameter wins over the path, as in libpq.
    """
    _scheme, _netloc, path, query, _fragment = _split_postgres_url(dsn)
    _, from_query = _query_without_database(query)
    if from_query:
        return from_query
    name = unquote(path.lstrip("/"))
    return name or None


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------- server


@dataclass(slots=True)
class _EmbeddedPostgres:
    handle: Any  # pgserver.PostgresServer
    root: Path
    pid: int
    socket_dir: Path | None


class PostgresServer(OwnedServer[_EmbeddedPostgres]):
    """A PostgreSQL server on which tests create and drop their own databases.

    Build one with :meth:`external` or :meth:`embedded` (or
    :func:`postgres_server_from_env`), never with the constructor. ``stop()`` (also
    run by ``with`` and at interpreter exit) shuts an embedded server down and
    removes its directory; it is idempotent and does nothing for external servers.
    Only databases created through this object can be dropped through it.
    """

    def __init__(self, admin_url: str, embedded: _EmbeddedPostgres | None) -> None:
        self._admin_url = admin_url
        self._embedded = embedded
        self._root = embedded.root if embedded else None
        self._pid = embedded.pid if embedded else None
        self._created: set[str] = set()
        if embedded is not None:
            atexit.register(self.stop)

    @classmethod
    def external(cls, url: str) -> PostgresServer:
        """Use the server at ``url``; its database is the one used for CREATE/DROP DATABASE.

        Nothing is contacted until a database is created. The role in ``url`` needs
        the CREATEDB privilege.
        """
        _split_postgres_url(url)
        return cls(url, None)

    @classmethod
    def embedded(cls, base_dir: Path | str | None = None) -> PostgresServer:
        """Start a private PostgreSQL (pgserver) in a new temporary directory.

        The directory is created under ``base_dir`` (default: the system temp dir)
        and the server listens only on a Unix socket. Returns once the server accepts
        connections. When run as root, pgserver runs postgres as a system user
        ``pgserver``, creating that user if needed.
        """
        root = _private_tempdir("meshkit-pg-", base_dir)
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (pgserver's lock dir).
                warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
                from pgserver.postgres_server import get_server

            handle = get_server(root / "pgdata", cleanup_mode="delete")
            info = handle.get_postmaster_info()
            embedded = _EmbeddedPostgres(handle, root, int(info.pid), info.socket_dir)
        except BaseException:
            _kill_postgres_in(root)
            _remove_tree(root)
            raise
        return cls(handle.get_uri(), embedded)

    @property
    def admin_url(self) -> str:
        """URL of the maintenance database; for embedded servers a ``?host=<socket dir>`` URL."""
        return self._admin_url

    def __repr__(self) -> str:
        mode = "embedded" if self.is_embedded else "external"
        return f"PostgresServer({mode}, {_redact_url(self._admin_url)!r})"

    async def _admin(self) -> Any:
        return await asyncpg.connect(self._admin_url)

    async def create_database(self, prefix: str = "test") -> str:
        """Create an empty database ``<prefix>_<hex>`` and return a URL for it."""
        name = unique_database_name(prefix)
        conn = await self._admin()
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        finally:
            await conn.close()
        self._created.add(name)
        return dsn_with_database(self._admin_url, name)

    async def drop_database(self, dsn: str) -> None:
        """Drop a database made by :meth:`create_database`, first ending its sessions.

        Raises ValueError for a database this object did not create. Dropping one
        that no longer exists is not an error.
        """
        name = database_name_from_dsn(dsn)
        if name is None or name not in self._created:
            raise ValueError(f"refusing to drop a database this server did not create: {name!r}")
        conn = await self._admin()
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)}{force}")
        finally:
            await conn.close()
        self._created.discard(name)

    async def database_exists(self, name: str) -> bool:
        """Whether a database called ``name`` exists on the server."""
        conn = await self._admin()
        try:
            found = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        finally:
            await conn.close()
        return found is not None

    @contextlib.asynccontextmanager
    async def database(self, prefix: str = "test") -> AsyncIterator[str]:
        """Yield the URL of a fresh database, dropped on exit even if the body raised."""
        dsn = await self.create_database(prefix)
        try:
            yield dsn
        finally:
            await self.drop_database(dsn)

    def stop(self) -> None:
        """Stop an embedded server and remove its directory; idempotent."""
        embedded, self._embedded = self._embedded, None
        if embedded is None:
            return
        atexit.unregister(self.stop)
        try:
            embedded.handle.cleanup()  # pg_ctl stop (fast mode), removes pgdata
        finally:
            # pgserver skips stopping if it thinks other processes share the server.
            _stop_pid(embedded.pid, str(embedded.root), signal.SIGINT, timeout=10.0)
            sock = embedded.socket_dir
            if sock is not None and not sock.is_relative_to(embedded.root):
                _remove_tree(sock)  # pgserver's fallback socket dir for long paths
            _remove_tree(embedded.root)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _kill_postgres_in(root: Path) -> None:
    """Best effort: stop a postmaster left running from a failed start under ``root``."""
    pidfile = root / "pgdata" / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError, RuntimeError):
        pid = int(pidfile.read_text().splitlines()[0])
        _stop_pid(pid, str(root), signal.SIGINT, timeout=10.0)


def postgres_server_from_env(
    env: Mapping[str, str] | None = None, base_dir: Path | str | None = None
) -> PostgresServer:
    """External server from ``DATABASE_URL`` if set, else a started embedded one."""
    choice = choose_backend(os.environ if env is None else env, DATABASE_URL_ENV)
    if choice.url is not None:
        return PostgresServer.external(choice.url)
    return PostgresServer.embedded(base_dir)
