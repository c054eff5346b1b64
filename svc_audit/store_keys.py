"""PostgreSQL adapter for subject keys and erasures (the crypto-shredding half of the store)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from svc_audit.chain import Entry
from svc_audit.store import Ack, AuditStore


@dataclass(frozen=True, slots=True)
class Erasure:
    """The first answer of an erasure, returned again to every repeat."""

    subject_id: str
    erase_time: datetime
    records_affected: int
    erasure_sequence: int


class RequestIdReused(Exception):
    """An erasure ``request_id`` was used before for another subject."""


async def wrapped_keys(store: AuditStore, subject_ids: Sequence[str]) -> dict[str, bytes]:
    """Wrapped keys of those subjects that have one."""
    rows = await store.pool.fetch(
        "SELECT subject_id, wrapped_key FROM audit.subject_keys WHERE subject_id = ANY($1)",
        list(subject_ids),
    )
    return {r["subject_id"]: r["wrapped_key"] for r in rows}


async def erased(store: AuditStore, subject_ids: Sequence[str]) -> dict[str, datetime]:
    """Erase times of those subjects that were erased."""
    rows = await store.pool.fetch(
        "SELECT subject_id, erase_time FROM audit.erased_subjects WHERE subject_id = ANY($1)",
        list(subject_ids),
    )
    return {r["subject_id"]: r["erase_time"] for r in rows}


async def add_wrapped_key(
    store: AuditStore, subject_id: str, wrapped: bytes, provider_key_id: str
) -> bytes | None:
    """Store a new subject key unless one exists or the subject is erased.

    Returns the wrapped key that holds after the call (ours or the one stored first), or None
    when the subject is erased.
    """
    async with store.pool.acquire() as conn, conn.transaction():
        # Serialise with erasure of the same subject: a key never outlives its erasure.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "subject:" + subject_id)
        if await conn.fetchval(
            "SELECT 1 FROM audit.erased_subjects WHERE subject_id = $1", subject_id
        ):
            return None
        await conn.execute(
            "INSERT INTO audit.subject_keys (subject_id, wrapped_key, provider_key_id)"
            " VALUES ($1, $2, $3) ON CONFLICT (subject_id) DO NOTHING",
            subject_id,
            wrapped,
            provider_key_id,
        )
        stored: bytes = await conn.fetchval(
            "SELECT wrapped_key FROM audit.subject_keys WHERE subject_id = $1", subject_id
        )
        return stored


async def erase(
    store: AuditStore,
    subject_id: str,
    request_id: str | None,
    erasure_entry: Callable[[int], Entry],
) -> tuple[Erasure, Ack | None]:
    """Destroy the subject's key and log the erasure, in one transaction; idempotent.

    ``erasure_entry(records_affected)`` builds the event that logs the erasure. Returns the
    erasure and the acknowledgement of its record (None when this is a repeat). Raises
    RequestIdReused if ``request_id`` named another subject before.
    """
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "subject:" + subject_id)
        if request_id is not None:
            before = await conn.fetchval(
                "SELECT subject_id FROM audit.erase_requests WHERE request_id = $1", request_id
            )
            if before is not None and before != subject_id:
                raise RequestIdReused()
        first = await _erasure(conn, subject_id)
        ack = None
        if first is None:
            # Take the sequencer first, so the count covers every record before the erasure.
            await conn.execute("SELECT 1 FROM audit.chain_head FOR UPDATE")
            affected: int = await conn.fetchval(
                "SELECT count(*) FROM audit.records WHERE subjects @> ARRAY[$1]", subject_id
            )
            await conn.execute("DELETE FROM audit.subject_keys WHERE subject_id = $1", subject_id)
            (ack,) = await store.append_locked(conn, [erasure_entry(affected)])
            first = Erasure(subject_id, ack.append_time, affected, ack.sequence)
            await conn.execute(
                "INSERT INTO audit.erased_subjects VALUES ($1, $2, $3, $4)",
                subject_id,
                first.erase_time,
                first.records_affected,
                first.erasure_sequence,
            )
        if request_id is not None:
            await conn.execute(
                "INSERT INTO audit.erase_requests VALUES ($1, $2) ON CONFLICT DO NOTHING",
                request_id,
                subject_id,
            )
    return first, ack


async def _erasure(conn: asyncpg.Connection, subject_id: str) -> Erasure | None:
    row = await conn.fetchrow(
        "SELECT * FROM audit.erased_subjects WHERE subject_id = $1", subject_id
    )
    if row is None:
        return None
    return Erasure(
        row["subject_id"], row["erase_time"], row["records_affected"], row["erasure_seq"]
    )


async def purge_destroyed_keys(store: AuditStore) -> None:
    """Rewrite the key table so no dead copy of a destroyed wrapped key stays in its pages."""
    async with store.owner() as conn:
        await conn.execute("VACUUM FULL audit.subject_keys")
