"""Append, AppendBatch and Query of the audit service against real PostgreSQL."""

from __future__ import annotations

import itertools

import asyncpg
import grpc
import pytest
from hvac.audit.v1 import audit_service_pb2 as pb
from hvac.audit.v1 import records_pb2

from svc_audit.chain import ZERO_HASH
from svc_audit.testing import ServedAudit, make_event


async def _query(audit: ServedAudit, **fields: object) -> list[pb.QueryResponse]:
    return [m async for m in audit.stub.Query(pb.QueryRequest(**fields))]  # type: ignore[arg-type]


async def test_first_record_is_sequence_one_linked_to_zero_hash(audit: ServedAudit) -> None:
    ack = await audit.stub.Append(pb.AppendRequest(event=make_event(1)))
    assert ack.sequence == 1 and not ack.duplicate
    (page,) = await _query(audit)
    assert [r.sequence for r in page.records] == [1]
    assert page.records[0].previous_hash == ZERO_HASH
    assert page.records[0].record_hash == ack.record_hash
    assert page.end_of_log and page.next_sequence == 2


async def test_records_link_each_to_the_one_before(audit: ServedAudit) -> None:
    for n in range(5):
        await audit.stub.Append(pb.AppendRequest(event=make_event(n)))
    records = [r for m in await _query(audit) for r in m.records]
    assert [r.sequence for r in records] == [1, 2, 3, 4, 5]
    for before, after in itertools.pairwise(records):
        assert after.previous_hash == before.record_hash


async def test_a_repeated_event_returns_the_first_ack_and_writes_nothing(
    audit: ServedAudit,
) -> None:
    event = make_event(7)
    first = await audit.stub.Append(pb.AppendRequest(event=event))
    await audit.stub.Append(pb.AppendRequest(event=make_event(8)))
    again = await audit.stub.Append(pb.AppendRequest(event=event))
    assert again.duplicate
    assert (again.sequence, again.record_hash, again.append_time) == (
        first.sequence,
        first.record_hash,
        first.append_time,
    )
    assert sum(len(m.records) for m in await _query(audit)) == 2


async def test_a_reused_event_id_with_other_content_is_already_exists(
    audit: ServedAudit,
) -> None:
    event = make_event(7)
    await audit.stub.Append(pb.AppendRequest(event=event))
    changed = make_event(7)
    changed.event_id = event.event_id
    changed.action = "control.plan.rejected"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.Append(pb.AppendRequest(event=changed))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert sum(len(m.records) for m in await _query(audit)) == 1


async def test_a_batch_is_appended_in_request_order(audit: ServedAudit) -> None:
    events = [make_event(n) for n in range(10)]
    response = await audit.stub.AppendBatch(pb.AppendBatchRequest(events=events))
    assert [a.event_id for a in response.acks] == [e.event_id for e in events]
    assert [a.sequence for a in response.acks] == list(range(1, 11))


async def test_a_repeated_batch_marks_known_events_duplicate_and_appends_the_rest(
    audit: ServedAudit,
) -> None:
    known = make_event(1)
    first = await audit.stub.AppendBatch(pb.AppendBatchRequest(events=[known]))
    response = await audit.stub.AppendBatch(pb.AppendBatchRequest(events=[make_event(0), known]))
    assert [(a.sequence, a.duplicate) for a in response.acks] == [(2, False), (1, True)]
    assert response.acks[1].record_hash == first.acks[0].record_hash


async def test_a_batch_with_one_conflicting_event_writes_nothing(audit: ServedAudit) -> None:
    await audit.stub.Append(pb.AppendRequest(event=make_event(1)))
    conflicting = make_event(1, action="control.plan.rejected")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.AppendBatch(
            pb.AppendBatchRequest(events=[make_event(2), conflicting, make_event(3)])
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert sum(len(m.records) for m in await _query(audit)) == 1


async def test_query_filters_combine_with_and(audit: ServedAudit) -> None:
    events = [
        make_event(0, action="control.plan.applied", building_id="hq-1"),
        make_event(1, action="control.plan.rejected", building_id="hq-1"),
        make_event(2, action="control.planner.started", building_id="hq-1"),
        make_event(3, action="control.plan.applied", building_id="lab-2"),
        make_event(4, action="gateway.override.created", outcome=records_pb2.OUTCOME_DENIED),
    ]
    await audit.stub.AppendBatch(pb.AppendBatchRequest(events=events))

    async def sequences(**fields: object) -> list[int]:
        return [r.sequence for m in await _query(audit, **fields) for r in m.records]

    assert await sequences(action_prefix="control.plan") == [1, 2, 4]
    assert await sequences(action_prefix="control.plan", building_id="hq-1") == [1, 2]
    assert await sequences(action="control.plan.applied") == [1, 4]
    assert await sequences(outcome=records_pb2.OUTCOME_DENIED) == [5]
    assert await sequences(resource=events[2].resource) == [3]
    assert await sequences(actor="spiffe://hvac.local/other") == []


async def test_query_pages_resume_from_next_sequence_without_gaps_or_repeats(
    audit: ServedAudit,
) -> None:
    await audit.stub.AppendBatch(pb.AppendBatchRequest(events=[make_event(n) for n in range(25)]))
    seen: list[int] = []
    start = 0
    while True:
        messages = await _query(audit, start_sequence=start, page_size=7)
        seen += [r.sequence for m in messages for r in m.records]
        start = messages[-1].next_sequence
        if messages[-1].end_of_log:
            break
    assert seen == list(range(1, 26))


async def test_query_beyond_the_end_yields_one_empty_end_of_log_message(
    audit: ServedAudit,
) -> None:
    await audit.stub.Append(pb.AppendRequest(event=make_event(1)))
    (message,) = await _query(audit, start_sequence=50)
    assert not message.records and message.end_of_log


async def test_the_service_role_cannot_update_or_delete_records(audit: ServedAudit) -> None:
    await audit.stub.Append(pb.AppendRequest(event=make_event(1)))
    async with audit.runtime.store.pool.acquire() as conn:
        for statement in (
            "UPDATE audit.records SET action = 'x.y'",
            "DELETE FROM audit.records",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)


async def test_a_trigger_refuses_update_and_delete_even_for_the_owner(
    audit: ServedAudit, pg: asyncpg.Connection
) -> None:
    await audit.stub.Append(pb.AppendRequest(event=make_event(1)))
    for statement in (
        "UPDATE audit.records SET action = 'x.y'",
        "DELETE FROM audit.records",
        "TRUNCATE audit.records",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await pg.execute(statement)
    assert await pg.fetchval("SELECT count(*) FROM audit.records") == 1
