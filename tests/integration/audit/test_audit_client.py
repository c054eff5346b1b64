"""A service records events through AuditClient; they reach the log with their UUIDv7 ids."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
from hvac.audit.v1 import audit_service_pb2 as pb

from meshkit.audit_client import AuditClient, uuid7
from svc_audit.testing import ServedAudit

ACTOR = "spiffe://hvac.local/ns/hvac/sa/control"


def test_uuid7_ids_are_version_7_and_sort_by_creation() -> None:
    ids = [uuid7() for _ in range(50)]
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)  # millisecond prefix ordered


async def test_recorded_events_are_delivered_with_their_fields(
    audit: ServedAudit, tmp_path: Path
) -> None:
    async with grpc.aio.insecure_channel(audit.address) as channel:
        client = AuditClient(tmp_path / "outbox", channel, ACTOR)
        first = await client.record(
            "control.plan.applied", "buildings/hq-1", building_id="hq-1",
            attributes={"plan_id": "p-1"}, personal=[("user-3", "user_id", "op-3")],
        )  # fmt: skip
        second = await client.record("control.fallback.engaged", "buildings/hq-1")
        while await client.outbox.deliver_once():
            pass
    records = [r async for m in audit.stub.Query(pb.QueryRequest()) for r in m.records]
    assert [r.event.event_id for r in records] == [first, second]
    assert records[0].event.actor == ACTOR and records[0].event.attributes["plan_id"] == "p-1"
    assert records[0].personal_fields[0].value == "op-3"
