"""Retention: drop whole monthly partitions older than the retention period.

Before a partition goes, a signed checkpoint at its last record anchors what remains: the first
retained record links to that checkpoint's head hash, so ``VerifyChain`` from the oldest retained
record still proves the chain. Dropping runs as the owner role (the writer role cannot), under
the sequencer lock, oldest partition first.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from svc_audit.anchoring import Checkpointer
from svc_audit.store import AuditStore

log = logging.getLogger("svc_audit.retention")

_PARTITION = re.compile(r"^records_(\d{4})_(\d{2})$")


@dataclass(frozen=True, slots=True)
class Dropped:
    partition: str
    first_retained_seq: int


def month_end(year: int, month: int) -> datetime:
    """The exclusive upper bound of a monthly partition (UTC)."""
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def expired(partitions: list[str], cutoff: datetime) -> list[tuple[str, datetime]]:
    """Partitions whose whole month lies before ``cutoff``, oldest first."""
    found = []
    for name in partitions:
        match = _PARTITION.match(name)
        if match:
            end = month_end(int(match[1]), int(match[2]))
            if end <= cutoff:
                found.append((name, end))
    return sorted(found, key=lambda item: item[1])


async def apply(store: AuditStore, checkpointer: Checkpointer, cutoff: datetime) -> list[Dropped]:
    """Drop every partition that ended before ``cutoff``; returns what was dropped, in order."""
    dropped: list[Dropped] = []
    async with store.owner() as conn:
        names = [
            r["name"]
            for r in await conn.fetch(
                "SELECT c.relname AS name FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'audit.records'::regclass"
            )
        ]
        for name, end in expired(names, cutoff):
            last = await conn.fetchrow(
                f'SELECT seq, record_hash FROM audit."{name}" ORDER BY seq DESC LIMIT 1'
            )
            if last is not None:
                # Anchor what remains before anything is removed.
                await checkpointer.sign_at(last["seq"], last["record_hash"], "retention")
            async with conn.transaction():
                head = await conn.fetchrow(
                    "SELECT seq, first_retained_seq FROM audit.chain_head FOR UPDATE"
                )
                first_retained = last["seq"] + 1 if last is not None else head["first_retained_seq"]
                await conn.execute(f'DROP TABLE audit."{name}"')
                await conn.execute(
                    "UPDATE audit.chain_head SET first_retained_seq = $1",
                    max(first_retained, head["first_retained_seq"]),
                )
                await conn.execute(
                    "INSERT INTO audit.retention_drops VALUES ($1, $2, $3, $4)",
                    name,
                    checkpointer.clock(),
                    end,
                    first_retained,
                )
            dropped.append(Dropped(name, first_retained))
            log.info(
                "partition dropped", extra={"partition": name, "first_retained": first_retained}
            )
    return dropped


def cutoff_for(now: datetime, retention_days: int) -> datetime:
    """Records appended before this instant are past the retention period."""
    return now - timedelta(days=retention_days)
