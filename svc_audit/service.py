"""The audit servicer: translates protobuf to domain calls and back, nothing more.

Request rules are checked by meshkit's validation interceptor before any method runs; this
module adds the checks the rules cannot express (unknown fields, ranges against the log's
state) and maps outages of PostgreSQL or the key provider to UNAVAILABLE.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeAlias, TypeVar

import asyncpg
import grpc
from google.protobuf.message import Message
from hvac.audit.v1 import audit_service_pb2 as pb
from hvac.audit.v1 import audit_service_pb2_grpc as pb_grpc

from meshkit import Service, abort, invalid_argument
from meshkit.errors import retry_later, rich_status
from svc_audit import anchoring, chain, convert, store_keys, store_query
from svc_audit.chain import Entry
from svc_audit.checkpoint import check
from svc_audit.config import AuditConfig
from svc_audit.crypto import KeyProviderError
from svc_audit.ledger import ContentConflict, OpenedRecord
from svc_audit.runtime import Runtime, open_runtime
from svc_audit.store import Ack

T = TypeVar("T")
Context: TypeAlias = grpc.aio.ServicerContext
_OUTAGES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, KeyProviderError)
_ERASED_ACTION = "audit.subject.erased"
_ERASURE_NAMESPACE = uuid.UUID("6f1c2f0e-4b7a-4f7e-9a53-3d2c1b0a9e8d")


async def _guard(context: Context, work: Awaitable[T]) -> T:
    """Await ``work``; an outage of the database or key provider becomes UNAVAILABLE."""
    try:
        return await work
    except _OUTAGES as exc:
        await abort(
            context,
            retry_later(
                grpc.StatusCode.UNAVAILABLE,
                f"audit storage unavailable ({type(exc).__name__})",
                1.0,
            ),
        )


async def _reject_unknown_fields(context: Context, request: Message) -> None:
    found = convert.unknown_field_violations(request)
    if found:
        await abort(context, invalid_argument(found))


async def _fail(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await abort(context, rich_status(code, message))


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def Append(self, request: pb.AppendRequest, context: Context) -> pb.AppendResponse:
        (ack,) = await self._append(context, request, [request.event])
        return convert.append_response(ack)

    async def AppendBatch(
        self, request: pb.AppendBatchRequest, context: Context
    ) -> pb.AppendBatchResponse:
        acks = await self._append(context, request, list(request.events))
        return pb.AppendBatchResponse(acks=[convert.event_ack(a) for a in acks])

    async def _append(self, context: Context, request: Message, events: list[Any]) -> list[Ack]:
        await _reject_unknown_fields(context, request)
        try:
            acks = await _guard(
                context, self.rt.ledger.append([convert.event_in(e) for e in events])
            )
        except ContentConflict as exc:
            await _fail(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"event_id already logged with different content: {', '.join(exc.event_ids)}",
            )
        self.rt.checkpointer.appended(max(a.sequence for a in acks))
        return acks

    async def Query(
        self, request: pb.QueryRequest, context: Context
    ) -> AsyncIterator[pb.QueryResponse]:
        await _reject_unknown_fields(context, request)
        head = await _guard(context, self.rt.store.head())
        if 0 < request.start_sequence < head.first_retained:
            await _fail(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"records before {head.first_retained} were removed by retention",
            )
        start = request.start_sequence or head.first_retained
        limit = request.page_size or 1000
        pages = store_query.pages(self.rt.store, convert.filters(request), start, limit)
        try:
            # aclosing: an aborted stream must hand its connection back at once.
            async with contextlib.aclosing(pages) as stream:
                async for rows, next_sequence, snapshot_head in stream:
                    records = []
                    for row in rows:
                        try:
                            records.append(await self._open(row))
                        except ValueError:  # undecodable bytes or a ciphertext that does not open
                            await _fail(
                                context,
                                grpc.StatusCode.DATA_LOSS,
                                f"record {row['seq']} cannot be read; VerifyChain finds the damage",
                            )
                    yield pb.QueryResponse(
                        records=[convert.record(r) for r in records],
                        next_sequence=next_sequence,
                        end_of_log=next_sequence > snapshot_head,
                    )
        except _OUTAGES as exc:
            await _fail(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"audit storage unavailable ({type(exc).__name__})",
            )

    async def _open(self, row: asyncpg.Record) -> OpenedRecord:
        record = chain.decode(row["entry"])
        personal = await self.rt.ledger.open_fields(record.entry)
        return OpenedRecord(
            record.sequence,
            record.entry,
            personal,
            row["record_hash"],
            row["previous_hash"],
            record.append_time_us,
        )

    async def VerifyChain(
        self, request: pb.VerifyChainRequest, context: Context
    ) -> pb.VerifyChainResponse:
        await _reject_unknown_fields(context, request)
        head = await _guard(context, self.rt.store.head())
        start = request.start_sequence or head.first_retained
        end = request.end_sequence or head.sequence
        if request.end_sequence > head.sequence:
            await _fail(context, grpc.StatusCode.OUT_OF_RANGE, f"the log ends at {head.sequence}")
        if request.start_sequence and request.start_sequence < head.first_retained:
            await _fail(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"records before {head.first_retained} were removed by retention",
            )
        if start > end:
            if request.start_sequence:
                await _fail(
                    context, grpc.StatusCode.OUT_OF_RANGE, f"the log ends at {head.sequence}"
                )
            return pb.VerifyChainResponse(ok=True, start_sequence=start, end_sequence=end)
        result = await _guard(
            context,
            anchoring.verify_chain(
                self.rt.store, self.rt.files, self.rt.trusted, start, end, head.first_retained
            ),
        )
        return convert.verify_response(result)

    async def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: Context
    ) -> pb.GetCheckpointResponse:
        await _reject_unknown_fields(context, request)
        stored = await _guard(context, self.rt.store.checkpoint(request.min_tree_size))
        if stored is None:
            await _fail(context, grpc.StatusCode.NOT_FOUND, "no checkpoint covers that size yet")
        return pb.GetCheckpointResponse(
            checkpoint=convert.checkpoint(anchoring.from_stored(stored))
        )

    async def EraseSubject(
        self, request: pb.EraseSubjectRequest, context: Context
    ) -> pb.EraseSubjectResponse:
        await _reject_unknown_fields(context, request)
        subject = request.subject_id

        def entry(records_affected: int) -> Entry:
            now = self.rt.clock()
            attributes = {
                "subject_id": subject,
                "reason": request.reason,
                "records_affected": str(records_affected),
            }
            if request.request_id:
                attributes["request_id"] = request.request_id
            return Entry(
                str(uuid.uuid5(_ERASURE_NAMESPACE, subject)),
                int(now.timestamp()),
                now.microsecond * 1000,
                self.rt.config.actor,
                _ERASED_ACTION,
                f"subjects/{subject}",
                "",
                1,
                tuple(sorted(attributes.items())),
                (),
            )

        try:
            erasure, ack = await _guard(
                context,
                store_keys.erase(self.rt.store, subject, request.request_id or None, entry),
            )
        except store_keys.RequestIdReused:
            await _fail(
                context, grpc.StatusCode.ALREADY_EXISTS, "request_id was used for another subject"
            )
        self.rt.keyring.forget(subject)
        if ack is not None:
            await _guard(context, store_keys.purge_destroyed_keys(self.rt.store))
            self.rt.checkpointer.appended(ack.sequence)
        return pb.EraseSubjectResponse(
            subject_id=erasure.subject_id,
            erase_time=convert.timestamp(erasure.erase_time),
            records_affected=erasure.records_affected,
            erasure_sequence=erasure.erasure_sequence,
        )

    async def GetComplianceReport(
        self, request: pb.GetComplianceReportRequest, context: Context
    ) -> pb.GetComplianceReportResponse:
        await _reject_unknown_fields(context, request)
        rt = self.rt
        now = rt.clock()
        tr = request.time_range
        start = convert.from_timestamp(tr.start_time) if tr.HasField("start_time") else None
        end = convert.from_timestamp(tr.end_time) if tr.HasField("end_time") else now
        report = await _guard(context, store_query.report(rt.store, start or _EPOCH, end))
        if start is None:
            start = report.oldest_retained_time or now
        latest = await _guard(context, rt.store.checkpoint(0))
        response = pb.GetComplianceReportResponse(
            create_time=convert.timestamp(now),
            totals=convert.counts(report.totals),
            erasures_performed=report.erasures,
        )
        response.time_range.start_time.CopyFrom(convert.timestamp(start))
        response.time_range.end_time.CopyFrom(convert.timestamp(end))
        for action, c in report.by_action.items():
            response.counts_by_action[action].CopyFrom(convert.counts(c))
        for actor, c in report.by_actor.items():
            response.counts_by_actor[actor].CopyFrom(convert.counts(c))
        status = response.checkpoint_status
        status.records_since_checkpoint = report.head_sequence - (latest.tree_size if latest else 0)
        if latest is not None:
            cp = anchoring.from_stored(latest)
            status.latest_checkpoint.CopyFrom(convert.checkpoint(cp))
            status.age.FromTimedelta(max(now - cp.sign_time, timedelta(0)))
            at = await _guard(context, rt.store.record_hash_at(cp.tree_size))
            disk = rt.files.read(cp.tree_size)
            status.verified = (
                check(cp, rt.trusted) is None
                and (at is None or at == cp.head_hash)  # None: removed by retention
                and disk is not None
                and (disk.note, disk.signature) == (cp.note, cp.signature)
            )
        retention = response.retention_status
        retention.retention_period.FromTimedelta(timedelta(days=rt.config.retention_days))
        retention.oldest_retained_sequence = report.oldest_retained_sequence
        if report.oldest_retained_time is not None:
            retention.oldest_retained_time.CopyFrom(convert.timestamp(report.oldest_retained_time))
        retention.partitions_dropped = report.partitions_dropped
        if report.last_drop_time is not None:
            retention.last_drop_time.CopyFrom(convert.timestamp(report.last_drop_time))
        return response


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@contextlib.asynccontextmanager
async def _audit_services(config: AuditConfig) -> AsyncIterator[list[Service]]:
    async with open_runtime(config) as runtime:
        yield [Service.generated(pb, pb_grpc, "AuditService", AuditServicer(runtime))]


def services(config: AuditConfig) -> contextlib.AbstractAsyncContextManager[list[Service]]:
    """The services this process serves, open for as long as the context is.

    Refuses to start (SystemExit naming DATABASE_URL) when no database is configured.
    """
    return _audit_services(config)


__all__ = ["AuditServicer", "services"]
