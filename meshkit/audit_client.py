"""How a service records an audit event: build it, spool it in the outbox, let the relay deliver.

    client = AuditClient(Path("var/outbox"), channel, actor="spiffe://hvac.local/ns/hvac/sa/control")
    relay = asyncio.create_task(client.outbox.run())
    await client.record("control.plan.applied", "buildings/hq-1", building_id="hq-1",
                        attributes={"plan_id": plan_id})

``record`` returns once the event is durable on local disk; audit may be down at that moment.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from hvac.audit.v1 import records_pb2

from meshkit.outbox import Outbox, audit_sender

Outcome = records_pb2.Outcome


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits; sorts by creation."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 9562 variant
    return str(uuid.UUID(int=value))


class AuditClient:
    """Records events as one workload (``actor``) through a durable outbox in ``folder``."""

    def __init__(self, folder: Path, channel: grpc.aio.Channel, actor: str) -> None:
        self.actor = actor
        self.outbox = Outbox(folder, audit_sender(channel))

    def event(
        self,
        action: str,
        resource: str,
        outcome: int = records_pb2.OUTCOME_SUCCESS,
        building_id: str = "",
        attributes: Mapping[str, str] | None = None,
        personal: Sequence[tuple[str, str, str]] = (),
    ) -> records_pb2.AuditEvent:
        """A new event with a fresh UUIDv7 id, happening now; ``personal`` holds
        ``(subject_id, name, value)`` triples, which audit encrypts per subject."""
        event = records_pb2.AuditEvent(
            event_id=uuid7(),
            actor=self.actor,
            action=action,
            resource=resource,
            building_id=building_id,
            outcome=outcome,  # type: ignore[arg-type]
            attributes=dict(attributes or {}),
            personal_data=[
                records_pb2.PersonalField(subject_id=s, name=n, value=v) for s, n, v in personal
            ],
        )
        event.occurred_time.GetCurrentTime()
        return event

    async def record(self, action: str, resource: str, **fields: object) -> str:
        """Build and spool an event (see ``event``); returns its id once it is durable."""
        event = self.event(action, resource, **fields)  # type: ignore[arg-type]
        await self.outbox.put_async(event)
        return event.event_id
