"""Many concurrent writers still make one gapless chain with every event exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from hvac.audit.v1 import audit_service_pb2 as pb

from svc_audit.testing import ServedAudit, audit_config, make_event, served_audit

WRITERS = 32
EVENTS_PER_WRITER = 500


async def test_32_concurrent_writers_make_one_chain_without_gaps_forks_or_duplicates(
    audit: ServedAudit, pg: asyncpg.Connection
) -> None:
    async def writer(w: int) -> list[tuple[str, int, bytes]]:
        acks = []
        for i in range(EVENTS_PER_WRITER):
            event = make_event(w * EVENTS_PER_WRITER + i)
            ack = await audit.stub.Append(pb.AppendRequest(event=event))
            acks.append((event.event_id, ack.sequence, ack.record_hash))
        return acks

    acknowledged = [a for acks in await asyncio.gather(*map(writer, range(WRITERS))) for a in acks]
    total = WRITERS * EVENTS_PER_WRITER
    assert sorted(seq for _, seq, _ in acknowledged) == list(range(1, total + 1))

    rows = await pg.fetch("SELECT seq, event_id::text AS id, record_hash FROM audit.records")
    assert len(rows) == total
    stored = {r["id"]: (r["seq"], r["record_hash"]) for r in rows}
    assert stored == {event_id: (seq, digest) for event_id, seq, digest in acknowledged}

    result = await audit.stub.VerifyChain(pb.VerifyChainRequest())
    assert result.ok and result.records_checked == total


async def test_two_instances_sharing_database_and_state_make_one_verifiable_chain(
    database_url: str, tmp_path: Path
) -> None:
    config = audit_config(database_url, tmp_path)
    async with served_audit(config) as first, served_audit(config) as second:
        for n in range(20):
            instance = first if n % 2 else second
            await instance.stub.Append(pb.AppendRequest(event=make_event(n)))
            if n % 5 == 4:
                await instance.runtime.checkpointer.sign_head()
        for instance in (first, second):
            result = await instance.stub.VerifyChain(pb.VerifyChainRequest())
            assert result.ok and result.records_checked == 20
            assert (result.checkpoints_checked, result.anchored_sequence) == (4, 20)
