"""Many concurrent writers still make one gapless chain with every event exactly once."""

from __future__ import annotations

import asyncio

import asyncpg
from hvac.audit.v1 import audit_service_pb2 as pb

from svc_audit.testing import ServedAudit, make_event

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
