"""Helpers for tests and benchmarks of the audit service: a served instance and valid events."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import grpc
from hvac.audit.v1 import audit_service_pb2 as pb
from hvac.audit.v1 import audit_service_pb2_grpc as pb_grpc
from hvac.audit.v1 import records_pb2

from meshkit import Service, serve
from meshkit.config import from_env
from svc_audit.config import AuditConfig
from svc_audit.crypto import KeyProvider
from svc_audit.runtime import Clock, Runtime, open_runtime, utc_now
from svc_audit.service import AuditServicer

ACTOR = "spiffe://hvac.local/region/us-east/svc/control"


def audit_config(database_url: str, state_dir: Path, **overrides: Any) -> AuditConfig:
    """A config for tests: checkpoints only when asked, no retention job, files in ``state_dir``."""
    settings: dict[str, Any] = {
        "database_url": database_url,
        "state_dir": state_dir,
        "checkpoint_every_records": 1_000_000,
        "checkpoint_interval_s": 3600.0,
        "retention_interval_s": 0.0,
    }
    settings.update(overrides)
    return from_env(AuditConfig, environ={}, **settings)


@dataclass
class ServedAudit:
    """A running audit service: its stub, its parts, and where its files are."""

    stub: pb_grpc.AuditServiceStub
    runtime: Runtime
    address: str


@contextlib.asynccontextmanager
async def served_audit(
    config: AuditConfig, clock: Clock = utc_now, provider: KeyProvider | None = None
) -> AsyncIterator[ServedAudit]:
    """Serve the audit service on a free loopback port until the context ends."""
    async with open_runtime(config, clock, provider) as runtime:
        service = Service.generated(pb, pb_grpc, "AuditService", AuditServicer(runtime))
        server = await serve([service], config)
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                yield ServedAudit(pb_grpc.AuditServiceStub(channel), runtime, server.address)
        finally:
            await server.stop(0)


def make_event(
    n: int | None = None,
    action: str = "control.plan.applied",
    actor: str = ACTOR,
    building_id: str = "hq-1",
    outcome: int = records_pb2.OUTCOME_SUCCESS,
    personal: list[tuple[str, str, str]] | None = None,
    occurred: datetime | None = None,
) -> records_pb2.AuditEvent:
    """A valid event; ``n`` makes its id deterministic (UUID n + 1)."""
    event = records_pb2.AuditEvent(
        event_id=str(uuid.UUID(int=n + 1)) if n is not None else str(uuid.uuid4()),
        actor=actor,
        action=action,
        resource=f"buildings/{building_id}/zones/z-{(n or 0) % 7}",
        building_id=building_id,
        outcome=outcome,  # type: ignore[arg-type]
        attributes={"plan_id": f"p-{n}", "solver": "highs"},
    )
    event.occurred_time.FromDatetime(occurred or datetime.now(UTC))
    for subject_id, name, value in personal or []:
        event.personal_data.add(subject_id=subject_id, name=name, value=value)
    return event


class TcpProxy:
    """A TCP port forwarding to PostgreSQL that a test can cut and restore (an outage).

    ``target`` is ``(host, port)`` for TCP or a Unix socket path. While down, the port refuses
    connections and every open connection is cut, as when the database host disappears.
    """

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if isinstance(self.target, str):
            return await asyncio.open_unix_connection(self.target)
        return await asyncio.open_connection(*self.target)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._open_target()
        except OSError:
            writer.close()
            return
        self._links |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._links -= {writer, up_writer}

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            link.transport.abort()
        self._links.clear()


def proxy_target(database_url: str) -> tuple[str, int] | str:
    """Where ``database_url`` connects: ``(host, port)``, or a Unix socket path."""
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query))
    port = int(query.get("port", parts.port or 5432))
    if "host" in query and query["host"].startswith("/"):
        return f"{query['host']}/.s.PGSQL.{port}"
    return (parts.hostname or "127.0.0.1", port)


def via_proxy(database_url: str, proxy_port: int) -> str:
    """``database_url`` rewritten to reach the server through 127.0.0.1:``proxy_port``."""
    parts = urlsplit(database_url)
    query = {k: v for k, v in parse_qsl(parts.query) if k not in ("host", "port")}
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{proxy_port}" if auth else f"127.0.0.1:{proxy_port}"
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))
