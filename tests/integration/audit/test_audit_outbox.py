"""The outbox loses nothing while PostgreSQL is unreachable, and the backlog drains after."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import asyncpg
import grpc
from hvac.audit.v1 import audit_service_pb2 as pb

from meshkit.outbox import Outbox, audit_sender
from svc_audit.testing import (
    ServedAudit,
    TcpProxy,
    audit_config,
    make_event,
    proxy_target,
    served_audit,
    via_proxy,
)

OUTAGE_S = 20.0
PRODUCE_EVERY_S = 0.05


async def _wait_until_drained(outbox: Outbox, limit_s: float = 60.0) -> None:
    for _ in range(int(limit_s / 0.1)):
        if outbox.stats().backlog == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"backlog did not drain: {outbox.stats()}")


async def test_a_database_outage_of_20_s_loses_and_duplicates_nothing(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    proxy = TcpProxy(proxy_target(database_url))
    await proxy.up()
    config = audit_config(via_proxy(database_url, proxy.port), tmp_path / "audit")
    acknowledged: list[str] = []
    backlog_during_outage = 0
    async with served_audit(config) as audit:
        async with grpc.aio.insecure_channel(audit.address) as channel:
            outbox = Outbox(tmp_path / "outbox", audit_sender(channel, timeout_s=2.0),
                            max_backoff_s=1.0)  # fmt: skip
            relay = asyncio.create_task(outbox.run(idle_poll_s=0.2))
            counter = itertools.count()

            async def produce(duration_s: float) -> None:
                for _ in range(int(duration_s / PRODUCE_EVERY_S)):
                    event = make_event(next(counter))
                    await outbox.put_async(event)  # returns once durable: acknowledged
                    acknowledged.append(event.event_id)
                    await asyncio.sleep(PRODUCE_EVERY_S)

            await produce(2.0)
            await proxy.down()
            await produce(OUTAGE_S)
            backlog_during_outage = outbox.stats().backlog
            oldest_age_s = outbox.stats().oldest_age_s
            await proxy.up()
            await produce(2.0)
            await _wait_until_drained(outbox)
            relay.cancel()
        await proxy.down()
    assert backlog_during_outage > 0 and oldest_age_s > 0
    rows = await pg.fetch("SELECT event_id::text AS id FROM audit.records")
    stored = [r["id"] for r in rows]
    assert len(stored) == len(set(stored)), "duplicates"
    assert set(stored) == set(acknowledged), "lost or foreign events"
    assert outbox.stats().delivered_total >= len(acknowledged)


async def test_the_spool_survives_a_restart_of_the_producer(
    audit: ServedAudit, tmp_path: Path
) -> None:
    async def refuse(events: object) -> None:
        raise AssertionError("not sent")

    first = Outbox(tmp_path / "outbox", refuse)
    events = [make_event(n) for n in range(5)]
    for event in events:
        first.put(event)
    assert first.stats().backlog == 5
    async with grpc.aio.insecure_channel(audit.address) as channel:
        second = Outbox(tmp_path / "outbox", audit_sender(channel))
        while await second.deliver_once():
            pass
    assert second.stats().backlog == 0
    records = [r async for m in audit.stub.Query(pb.QueryRequest()) for r in m.records]
    assert [r.event.event_id for r in records] == [e.event_id for e in events]


async def test_an_event_audit_refuses_goes_to_dead_letters_and_the_rest_is_delivered(
    audit: ServedAudit, tmp_path: Path
) -> None:
    original = make_event(1)
    await audit.stub.Append(pb.AppendRequest(event=original))
    reused = make_event(1, action="control.plan.rejected")  # same id, other content
    async with grpc.aio.insecure_channel(audit.address) as channel:
        outbox = Outbox(tmp_path / "outbox", audit_sender(channel))
        outbox.put_many([make_event(2), reused, make_event(3)])
        while await outbox.deliver_once():
            pass
    stats = outbox.stats()
    assert (stats.backlog, stats.dead_total, stats.delivered_total) == (0, 1, 2)
    assert [p.name.split("-", 1)[1] for p in outbox.dead.iterdir()] == [f"{reused.event_id}.pb"]
