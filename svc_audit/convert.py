"""Protobuf <-> domain translation for the audit servicer (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.unknown_fields import UnknownFieldSet
from hvac.audit.v1 import audit_service_pb2 as pb
from hvac.audit.v1 import records_pb2

from meshkit import FieldViolation
from svc_audit.anchoring import Verification
from svc_audit.checkpoint import Checkpoint
from svc_audit.ledger import EventIn, OpenedRecord, PersonalValue
from svc_audit.store import Ack
from svc_audit.store_query import Counts, Filters


def unknown_field_violations(message: Message, path: str = "") -> list[FieldViolation]:
    """One violation per message (at any depth) that carries fields this contract lacks."""
    found: list[FieldViolation] = []
    if len(UnknownFieldSet(message)):
        found.append(
            FieldViolation(
                path or "(request)",
                "carries fields unknown to this version of the contract",
                "unknown_fields",
            )
        )
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        name = f"{path}.{field.name}" if path else field.name
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    found += unknown_field_violations(item, f'{name}["{key}"]')
        elif field.is_repeated:
            for i, item in enumerate(value):
                found += unknown_field_violations(item, f"{name}[{i}]")
        else:
            found += unknown_field_violations(value, name)
    return found


def event_in(event: records_pb2.AuditEvent) -> EventIn:
    return EventIn(
        event_id=event.event_id,
        occurred_s=event.occurred_time.seconds,
        occurred_nanos=event.occurred_time.nanos,
        actor=event.actor,
        action=event.action,
        resource=event.resource,
        building_id=event.building_id,
        outcome=event.outcome,
        attributes=tuple(sorted(event.attributes.items())),
        personal=tuple(PersonalValue(p.subject_id, p.name, p.value) for p in event.personal_data),
    )


def timestamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def append_response(ack: Ack) -> pb.AppendResponse:
    return pb.AppendResponse(
        sequence=ack.sequence,
        record_hash=ack.record_hash,
        append_time=timestamp(ack.append_time),
        duplicate=ack.duplicate,
    )


def event_ack(ack: Ack) -> pb.EventAck:
    return pb.EventAck(
        event_id=ack.event_id,
        sequence=ack.sequence,
        record_hash=ack.record_hash,
        append_time=timestamp(ack.append_time),
        duplicate=ack.duplicate,
    )


def filters(request: pb.QueryRequest) -> Filters:
    has_range = request.HasField("time_range")
    tr = request.time_range
    return Filters(
        start_time=from_timestamp(tr.start_time)
        if has_range and tr.HasField("start_time")
        else None,
        end_time=from_timestamp(tr.end_time) if has_range and tr.HasField("end_time") else None,
        actor=request.actor,
        action=request.action,
        action_prefix=request.action_prefix,
        resource=request.resource,
        building_id=request.building_id,
        outcome=request.outcome,
        subject_id=request.subject_id,
    )


def record(opened: OpenedRecord) -> records_pb2.AuditRecord:
    e = opened.entry
    message = records_pb2.AuditRecord(
        sequence=opened.sequence,
        record_hash=opened.record_hash,
        previous_hash=opened.previous_hash,
        event=records_pb2.AuditEvent(
            event_id=e.event_id,
            occurred_time=Timestamp(seconds=e.occurred_s, nanos=e.occurred_nanos),
            actor=e.actor,
            action=e.action,
            resource=e.resource,
            building_id=e.building_id,
            outcome=e.outcome,  # type: ignore[arg-type]
            attributes=dict(e.attributes),
        ),
    )
    us = opened.append_time_us
    message.append_time.FromMicroseconds(us)
    for f in opened.personal:
        field = message.personal_fields.add(subject_id=f.subject_id, name=f.name)
        if f.erase_time is None:
            field.state = records_pb2.PERSONAL_FIELD_STATE_AVAILABLE
            field.value = f.value
        else:
            field.state = records_pb2.PERSONAL_FIELD_STATE_ERASED
            field.erase_time.FromDatetime(f.erase_time)
    return message


def checkpoint(cp: Checkpoint) -> records_pb2.Checkpoint:
    return records_pb2.Checkpoint(
        origin=cp.origin,
        tree_size=cp.tree_size,
        head_hash=cp.head_hash,
        sign_time=timestamp(cp.sign_time),
        key_id=cp.key_id,
        signature=cp.signature,
        note=cp.note,
    )


def verify_response(v: Verification) -> pb.VerifyChainResponse:
    response = pb.VerifyChainResponse(
        ok=v.ok,
        start_sequence=v.start_sequence,
        end_sequence=v.end_sequence,
        records_checked=v.records_checked,
        checkpoints_checked=v.checkpoints_checked,
        anchored_sequence=v.anchored_sequence,
    )
    if v.fault is not None:
        response.first_bad_sequence = v.fault.sequence
        response.failure_reason = int(v.fault.reason)  # type: ignore[assignment]
        response.failure_detail = v.fault.detail
    return response


def counts(c: Counts) -> pb.OutcomeCounts:
    return pb.OutcomeCounts(total=c.total, success=c.success, failure=c.failure, denied=c.denied)
