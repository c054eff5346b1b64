"""PostgreSQL adapter for reading the log: filtered pages, compliance counts and retention."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from svc_audit.store import AuditStore


@dataclass(frozen=True, slots=True)
class Filters:
    """Conditions combined with AND; None (or empty) matches every record."""

    start_time: datetime | None = None
    end_time: datetime | None = None
    actor: str = ""
    action: str = ""
    action_prefix: str = ""
    resource: str = ""
    building_id: str = ""
    outcome: int = 0
    subject_id: str = ""


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + ".%"


def where(filters: Filters, args: list[object]) -> str:
    """SQL conditions for ``filters``, appending their parameters to ``args``."""
    conditions: list[str] = []

    def param(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if filters.start_time is not None:
        conditions.append(f"occurred_time >= {param(filters.start_time)}")
    if filters.end_time is not None:
        conditions.append(f"occurred_time < {param(filters.end_time)}")
    for column in ("actor", "action", "resource", "building_id"):
        value = getattr(filters, column)
        if value:
            conditions.append(f"{column} = {param(value)}")
    if filters.action_prefix:
        exact = param(filters.action_prefix)
        below = param(_like_prefix(filters.action_prefix))
        conditions.append(f"(action = {exact} OR action LIKE {below})")
    if filters.outcome:
        conditions.append(f"outcome = {param(filters.outcome)}")
    if filters.subject_id:
        conditions.append(f"subjects @> ARRAY[{param(filters.subject_id)}]::text[]")
    return " AND ".join(conditions) if conditions else "true"


async def pages(
    store: AuditStore, filters: Filters, start: int, limit: int, chunk: int = 200
) -> AsyncGenerator[tuple[list[asyncpg.Record], int, int], None]:
    """Yield ``(rows, next_sequence, snapshot_head)`` in ascending order, one consistent snapshot.

    Stops after ``limit`` rows or at the end of the snapshot (then ``next_sequence`` is
    ``snapshot_head + 1``).
    """
    async with (
        store.pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        head = await conn.fetchval("SELECT seq FROM audit.chain_head")
        left = limit
        position = start
        while True:
            args: list[object] = [position, head]
            conditions = where(filters, args)
            args.append(min(chunk, left))
            rows = await conn.fetch(
                "SELECT seq, entry, previous_hash, record_hash FROM audit.records"
                f" WHERE seq >= $1 AND seq <= $2 AND {conditions}"
                f" ORDER BY seq LIMIT ${len(args)}",
                *args,
            )
            left -= len(rows)
            if len(rows) < args[-1]:  # type: ignore[operator]
                yield rows, head + 1, head
                return
            position = rows[-1]["seq"] + 1
            yield rows, position, head
            if left == 0:
                return


@dataclass(frozen=True, slots=True)
class Counts:
    success: int = 0
    failure: int = 0
    denied: int = 0

    @property
    def total(self) -> int:
        return self.success + self.failure + self.denied


def _add(counts: Counts, outcome: int, n: int) -> Counts:
    if outcome == 1:
        return Counts(counts.success + n, counts.failure, counts.denied)
    if outcome == 2:
        return Counts(counts.success, counts.failure + n, counts.denied)
    return Counts(counts.success, counts.failure, counts.denied + n)


@dataclass(frozen=True, slots=True)
class Report:
    totals: Counts
    by_action: dict[str, Counts]
    by_actor: dict[str, Counts]
    erasures: int
    partitions_dropped: int
    last_drop_time: datetime | None
    oldest_retained_time: datetime | None
    oldest_retained_sequence: int
    head_sequence: int


async def report(store: AuditStore, start: datetime, end: datetime) -> Report:
    """Counts over records whose occurred time is in ``[start, end)``, and the log's state."""
    async with (
        store.pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        rows = await conn.fetch(
            "SELECT action, actor, outcome, count(*) AS n FROM audit.records"
            " WHERE occurred_time >= $1 AND occurred_time < $2 GROUP BY action, actor, outcome",
            start,
            end,
        )
        totals = Counts()
        by_action: dict[str, Counts] = {}
        by_actor: dict[str, Counts] = {}
        for r in rows:
            totals = _add(totals, r["outcome"], r["n"])
            by_action[r["action"]] = _add(
                by_action.get(r["action"], Counts()), r["outcome"], r["n"]
            )
            by_actor[r["actor"]] = _add(by_actor.get(r["actor"], Counts()), r["outcome"], r["n"])
        erasures = await conn.fetchval(
            "SELECT count(*) FROM audit.erased_subjects WHERE erase_time >= $1 AND erase_time < $2",
            start,
            end,
        )
        drops = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE drop_time >= $1 AND drop_time < $2) AS n,"
            " max(drop_time) AS last FROM audit.retention_drops",
            start,
            end,
        )
        head = await conn.fetchrow("SELECT seq, first_retained_seq FROM audit.chain_head")
        oldest_time = None
        if head["seq"] >= head["first_retained_seq"]:
            oldest_time = await conn.fetchval(
                "SELECT append_time FROM audit.records WHERE seq = $1", head["first_retained_seq"]
            )
    return Report(
        totals,
        by_action,
        by_actor,
        erasures,
        drops["n"],
        drops["last"],
        oldest_time,
        head["first_retained_seq"] if head["seq"] >= head["first_retained_seq"] else 0,
        head["seq"],
    )
