"""The durable audit outbox: a local spool on disk and a relay that delivers it to audit.

A service calls ``Outbox.put(event)``; when it returns, the event is on disk (written to a
temporary file, fsync'd, renamed into ``pending/``, and the folder fsync'd): that is the
acknowledgement to the producer, and nothing acknowledged is lost if the process, audit or
PostgreSQL dies afterwards. ``Outbox.run()`` relays the backlog oldest first in batches, retrying
with capped exponential backoff and jitter while audit is unreachable, and removes an event's
file only once audit has acknowledged it. Delivery is therefore at least once; the audit service
dedupes by event id, so a re-sent event is answered with its first acknowledgement.

An event audit refuses for good (INVALID_ARGUMENT, or ALREADY_EXISTS: the id was used for other
content) is moved to ``dead/`` and logged by event id, so it cannot block the events behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from hvac.audit.v1 import audit_service_pb2, audit_service_pb2_grpc, records_pb2

log = logging.getLogger("meshkit.outbox")

Send = Callable[[Sequence[records_pb2.AuditEvent]], Awaitable[None]]

# Codes after which the same request may succeed later; anything else is a refusal.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)


def audit_sender(channel: grpc.aio.Channel, timeout_s: float = 10.0) -> Send:
    """Delivers a batch with ``AuditService.AppendBatch`` over ``channel``."""
    stub = audit_service_pb2_grpc.AuditServiceStub(channel)

    async def send(events: Sequence[records_pb2.AuditEvent]) -> None:
        request = audit_service_pb2.AppendBatchRequest(events=list(events))
        await stub.AppendBatch(request, timeout=timeout_s)

    return send


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What operators watch: the backlog, how old its oldest event is, what was delivered."""

    backlog: int
    oldest_age_s: float
    delivered_total: int
    dead_total: int
    failed_attempts_total: int


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outbox:
    """A spool folder and its relay. ``put`` is thread-safe; run one relay per folder."""

    def __init__(
        self,
        folder: Path,
        send: Send,
        batch_size: int = 200,
        min_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.folder = folder
        self.pending = folder / "pending"
        self.dead = folder / "dead"
        self._tmp = folder / "tmp"
        for path in (self.pending, self.dead, self._tmp):
            path.mkdir(parents=True, exist_ok=True)
        self._send = send
        self.batch_size = batch_size
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()
        self._delivered = 0
        self._dead = 0
        self._failures = 0

    # ------------------------------------------------------------------ producer side

    def put(self, event: records_pb2.AuditEvent) -> None:
        """Spool ``event`` durably; returns once it would survive a crash (fsync)."""
        self.put_many([event])

    def put_many(self, events: Sequence[records_pb2.AuditEvent]) -> None:
        """Spool several events with one folder fsync; all are durable when this returns."""
        names = []
        for event in events:
            name = f"{time.time_ns():020d}-{event.event_id}.pb"
            tmp = self._tmp / name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, event.SerializeToString(deterministic=True))
                os.fsync(fd)
            finally:
                os.close(fd)
            names.append(name)
        for name in names:
            (self._tmp / name).replace(self.pending / name)
        _fsync_folder(self.pending)
        with contextlib.suppress(RuntimeError):  # no running loop: the relay polls anyway
            asyncio.get_running_loop().call_soon_threadsafe(self._wake.set)

    async def put_async(self, event: records_pb2.AuditEvent) -> None:
        """``put`` without blocking the event loop on the fsync."""
        await asyncio.to_thread(self.put, event)
        self._wake.set()

    # ------------------------------------------------------------------ relay side

    def _backlog(self) -> list[Path]:
        return sorted(self.pending.glob("*.pb"))

    def stats(self) -> OutboxStats:
        backlog = self._backlog()
        oldest_age_s = 0.0
        if backlog:
            spooled_ns = int(backlog[0].name.split("-", 1)[0])
            oldest_age_s = max(0.0, (time.time_ns() - spooled_ns) / 1e9)
        return OutboxStats(len(backlog), oldest_age_s, self._delivered, self._dead, self._failures)

    async def deliver_once(self) -> int:
        """Send one batch of the oldest events; returns how many left the backlog.

        Raises grpc.aio.AioRpcError with a retryable code when audit is unreachable.
        """
        files = self._backlog()[: self.batch_size]
        if not files:
            return 0
        events = []
        for path in files:
            event = records_pb2.AuditEvent()
            event.ParseFromString(path.read_bytes())
            events.append(event)
        try:
            await self._send(events)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in RETRYABLE:
                raise
            if len(files) == 1:
                self._bury(files[0], exc.code())
                return 1
            # One event spoils the batch: deliver one by one to find it.
            done = 0
            for path, event in zip(files, events, strict=True):
                try:
                    await self._send([event])
                except grpc.aio.AioRpcError as single:
                    if single.code() in RETRYABLE:
                        raise
                    self._bury(path, single.code())
                else:
                    path.unlink(missing_ok=True)
                    self._delivered += 1
                done += 1
            return done
        for path in files:
            path.unlink(missing_ok=True)
        self._delivered += len(files)
        return len(files)

    def _bury(self, path: Path, code: grpc.StatusCode) -> None:
        path.replace(self.dead / path.name)
        self._dead += 1
        event_id = path.stem.split("-", 1)[1]
        log.error("audit refused event", extra={"event_id": event_id, "code": code.name})

    async def run(self, idle_poll_s: float = 1.0) -> None:
        """Relay until cancelled: drain the backlog, back off while audit is unreachable."""
        backoff_s = self.min_backoff_s
        while True:
            try:
                moved = await self.deliver_once()
            except (grpc.aio.AioRpcError, OSError) as exc:
                self._failures += 1
                code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "OS_ERROR"
                log.warning("audit delivery deferred", extra={"code": code, "retry_s": backoff_s})
                await asyncio.sleep(backoff_s * (0.5 + random.random() / 2))
                backoff_s = min(backoff_s * 2, self.max_backoff_s)
                continue
            backoff_s = self.min_backoff_s
            if moved == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), idle_poll_s)
