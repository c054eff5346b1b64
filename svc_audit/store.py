"""PostgreSQL adapter of the audit log (asyncpg): migrations, the sequencer, reads and writes.

The only module of the service that talks to PostgreSQL. Connections of the pool work as the
role ``audit_writer`` (SELECT and INSERT on the log, never UPDATE or DELETE); migrations,
retention and vacuuming of destroyed keys use the connecting (owner) role on a separate
connection. Appends are serialised by taking the one head row FOR UPDATE, so sequence numbers
are gapless and the chain never forks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg

from meshkit.migrations import migrate
from svc_audit import chain
from svc_audit.chain import Entry, Record

WRITER_ROLE = "audit_writer"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

Clock = Callable[[], datetime]


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch (PostgreSQL's timestamp precision)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


@dataclass(frozen=True, slots=True)
class Ack:
    """The first acknowledgement of an event."""

    event_id: str
    sequence: int
    record_hash: bytes
    append_time: datetime
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Head:
    sequence: int
    head_hash: bytes
    first_retained: int


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    tree_size: int
    origin: str
    head_hash: bytes
    sign_time: datetime
    key_id: str
    signature: bytes
    note: bytes
    kind: str


class EventRaced(Exception):
    """An event id of the batch was committed by a concurrent append; re-check and retry."""


# The columns a verifier needs. ``columns_agree`` compares the filter columns with the hashed
# bytes where they are (see chain.encode for the layout: a 30-byte head, five strings, then the
# count of personal values, which must be 0 when the subject column is empty).
_VERIFY_SQL = """
SELECT seq, previous_hash, record_hash, entry,
  CASE WHEN octet_length(entry) < 34 OR get_byte(entry, 0) <> 1 THEN false ELSE
    substring(entry FROM 2 FOR 16)
      = int8send(seq) || int8send((extract(epoch FROM append_time) * 1000000)::bigint)
    AND ('x' || encode(substring(entry FROM 18 FOR 8), 'hex'))::bit(64)::bigint * 1000000
      + ('x' || encode(substring(entry FROM 26 FOR 4), 'hex'))::bit(32)::int / 1000
      = (extract(epoch FROM occurred_time) * 1000000)::bigint
    AND get_byte(entry, 29) = outcome
    AND substring(entry FROM 31 FOR octet_length(s.strings) + 4) = s.strings || CASE
      WHEN cardinality(subjects) = 0 THEN '\\x00000000'::bytea
      ELSE substring(entry FROM 31 + octet_length(s.strings) FOR 4) END
  END AS columns_agree,
  subjects
FROM audit.records,
  LATERAL (SELECT {strings} AS strings) s
WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3
""".format(
    # Each string as the canonical bytes hold it: 4-byte big-endian length, then UTF-8. Written
    # out rather than as a SQL function, which PostgreSQL would not inline (convert_to is STABLE).
    strings=" || ".join(
        f"int4send(octet_length(convert_to({c}, 'UTF8'))) || convert_to({c}, 'UTF8')"
        for c in ("event_id::text", "actor", "action", "resource", "building_id")
    )
)


class AuditStore:
    """The log in PostgreSQL. Build with ``open``; ``close`` releases every connection."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, clock: Clock) -> None:
        self.pool = pool
        self._dsn = dsn
        self._clock = clock
        self._months: set[date] = set()

    @classmethod
    async def open(cls, dsn: str, clock: Clock, max_connections: int = 10) -> AuditStore:
        """Migrate the schema, then open a pool whose connections work as ``audit_writer``."""
        await migrate(dsn, "audit", MIGRATIONS)
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=max_connections,
            timeout=5,
            command_timeout=60,
            server_settings={"role": WRITER_ROLE},
        )
        return cls(pool, dsn, clock)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Close the pool, waiting ``timeout_s`` for connections in use, then cutting them."""
        try:
            await asyncio.wait_for(self.pool.close(), timeout_s)
        except TimeoutError:
            self.pool.terminate()

    @contextlib.asynccontextmanager
    async def owner(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection as the connecting (owner) role, for retention and key vacuuming."""
        conn = await asyncpg.connect(self._dsn, timeout=5)
        try:
            yield conn
        finally:
            await conn.close()

    # ------------------------------------------------------------------ appends

    async def existing(self, event_ids: Sequence[str]) -> dict[str, tuple[Ack, bytes]]:
        """First acknowledgement and canonical bytes of those ``event_ids`` already logged."""
        rows = await self.pool.fetch(
            "SELECT e.event_id::text AS event_id, e.seq, e.record_hash, e.append_time, r.entry"
            " FROM audit.event_ids e JOIN audit.records r"
            "   ON r.seq = e.seq AND r.append_time = e.append_time"
            " WHERE e.event_id = ANY($1::uuid[])",
            list(event_ids),
        )
        return {
            r["event_id"]: (
                Ack(r["event_id"], r["seq"], r["record_hash"], r["append_time"], True),
                r["entry"],
            )
            for r in rows
        }

    async def append(self, entries: Sequence[Entry]) -> list[Ack]:
        """Append ``entries`` in order in one transaction; raises EventRaced, writes nothing,
        if one of their event ids got logged concurrently."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await self.append_locked(conn, entries)

    async def append_locked(self, conn: asyncpg.Connection, entries: Sequence[Entry]) -> list[Ack]:
        """Append inside the caller's transaction; takes the head row FOR UPDATE."""
        head = await conn.fetchrow(
            "SELECT seq, head_hash FROM audit.chain_head FOR UPDATE"
        )  # the one sequencer: concurrent appends queue here
        raced = await conn.fetchval(
            "SELECT count(*) FROM audit.event_ids WHERE event_id = ANY($1::uuid[])",
            [e.event_id for e in entries],
        )
        if raced:
            raise EventRaced()
        now = self._clock()
        append_us = to_us(now)
        month = date(now.year, now.month, 1)
        if month not in self._months:
            await conn.execute("SELECT audit.ensure_month($1)", month)
            self._months.add(month)
        first = head["seq"] + 1
        canonicals = [chain.encode(Record(first + i, append_us, e)) for i, e in enumerate(entries)]
        links = chain.chain(head["head_hash"], canonicals)
        append_time = from_us(append_us)
        await conn.copy_records_to_table(
            "records",
            schema_name="audit",
            columns=[
                "seq",
                "append_time",
                "event_id",
                "occurred_time",
                "actor",
                "action",
                "resource",
                "building_id",
                "outcome",
                "subjects",
                "entry",
                "previous_hash",
                "record_hash",
            ],
            records=[
                (
                    first + i,
                    append_time,
                    e.event_id,
                    from_us(e.occurred_s * 1_000_000 + e.occurred_nanos // 1000),
                    e.actor,
                    e.action,
                    e.resource,
                    e.building_id,
                    e.outcome,
                    e.subjects,
                    canonicals[i],
                    links[i].previous_hash,
                    links[i].record_hash,
                )
                for i, e in enumerate(entries)
            ],
        )
        await conn.copy_records_to_table(
            "event_ids",
            schema_name="audit",
            records=[
                (e.event_id, first + i, links[i].record_hash, append_time)
                for i, e in enumerate(entries)
            ],
        )
        await conn.execute(
            "UPDATE audit.chain_head SET seq = $1, head_hash = $2",
            first + len(entries) - 1,
            links[-1].record_hash,
        )
        return [
            Ack(e.event_id, first + i, links[i].record_hash, append_time)
            for i, e in enumerate(entries)
        ]

    # ------------------------------------------------------------------ reads

    async def head(self, conn: asyncpg.Connection | None = None) -> Head:
        row = await (conn or self.pool).fetchrow(
            "SELECT seq, head_hash, first_retained_seq FROM audit.chain_head"
        )
        return Head(row["seq"], row["head_hash"], row["first_retained_seq"])

    async def row_batches(
        self, first: int, last: int, chunk: int = 10_000
    ) -> AsyncGenerator[list[Any], None]:
        """Records ``first``..``last`` as stored, in sequence order, in batches of rows
        ``(seq, previous_hash, record_hash, entry, columns_agree, subjects)``.

        The next batch is requested before the current one is handed out, so the database reads
        while the caller hashes.
        """
        async with self.pool.acquire() as conn:
            statement = await conn.prepare(_VERIFY_SQL)
            batch = await statement.fetch(first, last, chunk)
            while batch:
                after = batch[-1]["seq"] + 1
                following = None
                if len(batch) == chunk and after <= last:
                    following = asyncio.ensure_future(statement.fetch(after, last, chunk))
                    await asyncio.sleep(0)  # let the request go out before the caller hashes
                try:
                    yield batch
                except BaseException:
                    if following is not None:
                        following.cancel()
                        with contextlib.suppress(BaseException):
                            await following
                    raise
                batch = await following if following is not None else []

    async def record_hash_at(self, sequence: int) -> bytes | None:
        value: bytes | None = await self.pool.fetchval(
            "SELECT record_hash FROM audit.records WHERE seq = $1", sequence
        )
        return value

    # ------------------------------------------------------------------ checkpoints

    async def add_checkpoint(self, cp: StoredCheckpoint) -> bool:
        """Store ``cp``; False if a checkpoint of that tree size is already stored."""
        status = await self.pool.execute(
            "INSERT INTO audit.checkpoints VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (tree_size) DO NOTHING",
            cp.tree_size,
            cp.origin,
            cp.head_hash,
            cp.sign_time,
            cp.key_id,
            cp.signature,
            cp.note,
            cp.kind,
        )
        return bool(status.endswith(" 1"))

    async def checkpoints(
        self, first: int, last: int, conn: asyncpg.Connection | None = None
    ) -> list[StoredCheckpoint]:
        rows = await (conn or self.pool).fetch(
            "SELECT * FROM audit.checkpoints WHERE tree_size BETWEEN $1 AND $2 ORDER BY tree_size",
            first,
            last,
        )
        return [StoredCheckpoint(**dict(r)) for r in rows]

    async def checkpoint(self, min_tree_size: int) -> StoredCheckpoint | None:
        """The latest checkpoint (``min_tree_size`` 0) or the earliest covering that size."""
        if min_tree_size == 0:
            sql = "SELECT * FROM audit.checkpoints ORDER BY tree_size DESC LIMIT 1"
            row = await self.pool.fetchrow(sql)
        else:
            sql = "SELECT * FROM audit.checkpoints WHERE tree_size >= $1 ORDER BY tree_size LIMIT 1"
            row = await self.pool.fetchrow(sql, min_tree_size)
        return None if row is None else StoredCheckpoint(**dict(row))
