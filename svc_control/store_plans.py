"""Overrides, plans and the snapshot behind GetBuildingState, in PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
from hvac.control.v1 import resources_pb2

from svc_control.registry import (
    ControlError,
    ErrorKind,
    Page,
)
from svc_control.store_rows import (
    PLANS_CHANNEL,
    Once,
    Queries,
    command_row,
    from_json,
    not_found,
    notify,
    override_row,
    spec_of,
    zone_row,
)


class PlanQueries(Queries):
    """Overrides, published plans and acknowledged commands."""

    async def create_override(
        self,
        building_id: str,
        zone_id: str,
        make: Callable[[list[resources_pb2.Zone]], resources_pb2.Override],
        once: Once | None = None,
    ) -> resources_pb2.Override:
        """Store ``make(covered zones)``; NOT_FOUND for a missing building or zone."""

        async def act(conn: asyncpg.Connection) -> resources_pb2.Override:
            if zone_id:
                covered = [await self.get_zone(building_id, zone_id, conn)]
            else:
                await self.get_building(building_id, conn)
                rows = await conn.fetch(
                    "SELECT * FROM control.zones WHERE building_id = $1", building_id
                )
                covered = [zone_row(r) for r in rows]
            override = make(covered)
            await conn.execute(
                "INSERT INTO control.overrides (override_id, building_id, zone_id, kind, spec,"
                " expire_time, create_time) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                override.override_id,
                building_id,
                zone_id,
                override.kind,
                spec_of(override),
                override.expire_time.ToDatetime(tzinfo=UTC),
                override.create_time.ToDatetime(tzinfo=UTC),
            )
            return override

        return await self._once(once, resources_pb2.Override, act)

    async def list_overrides(
        self, building_id: str, zone_id: str, state: int, page: Page | None, now: datetime
    ) -> tuple[list[resources_pb2.Override], bool]:
        """Overrides newest first, filtered by zone and state (0: any); NOT_FOUND."""
        after_time, after_id = (
            (datetime.fromisoformat(page.after[0]), page.after[1])
            if page and page.after
            else (None, None)
        )
        async with self.pool.acquire() as conn:
            await self.get_building(building_id, conn)
            rows = await conn.fetch(
                "SELECT * FROM control.overrides WHERE building_id = $1"
                " AND ($2 = '' OR zone_id = $2)"
                " AND CASE $3::int WHEN 0 THEN true"
                "  WHEN 1 THEN cancel_time IS NULL AND expire_time > $4"
                "  WHEN 2 THEN cancel_time IS NULL AND expire_time <= $4"
                "  ELSE cancel_time IS NOT NULL END"
                " AND ($5::timestamptz IS NULL OR (create_time, override_id) < ($5, $6::uuid))"
                " ORDER BY create_time DESC, override_id DESC LIMIT $7",
                building_id,
                zone_id,
                state,
                now,
                after_time,
                after_id,
                page.size + 1 if page else None,
            )
        size = page.size if page else len(rows)
        return [override_row(r, now) for r in rows[:size]], len(rows) > size

    async def cancel_override(
        self, building_id: str, override_id: str, now: datetime
    ) -> resources_pb2.Override:
        """Cancel an active override; a cancelled one is returned unchanged. NOT_FOUND, and
        FAILED_PRECONDITION for an expired one."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM control.overrides WHERE building_id = $1 AND override_id = $2"
                " FOR UPDATE",
                building_id,
                override_id,
            )
            if row is None:
                await self.get_building(building_id, conn)
                raise not_found(f"override {override_id} of building {building_id}")
            if row["cancel_time"] is None:
                if row["expire_time"] <= now:
                    raise ControlError(
                        ErrorKind.FAILED_PRECONDITION, f"override {override_id} has expired"
                    )
                row = await conn.fetchrow(
                    "UPDATE control.overrides SET cancel_time = $2 WHERE override_id = $1"
                    " RETURNING *",
                    override_id,
                    now,
                )
            return override_row(row, now)

    async def building_snapshot(
        self, building_id: str, now: datetime
    ) -> tuple[
        resources_pb2.Building,
        list[resources_pb2.Zone],
        dict[str, resources_pb2.SetpointCommand],
        int,
    ]:
        """A building, its zones, the command in force per zone and its connected devices."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            building = await self.get_building(building_id, conn)
            zones = [
                zone_row(r)
                for r in await conn.fetch(
                    "SELECT * FROM control.zones WHERE building_id = $1 ORDER BY zone_id",
                    building_id,
                )
            ]
            commands = {
                r["zone_id"]: command_row(r)
                for r in await conn.fetch(
                    "SELECT DISTINCT ON (zone_id) * FROM control.commands WHERE building_id = $1"
                    " AND valid_from_time <= $2 AND valid_until_time > $2"
                    " ORDER BY zone_id, valid_from_time DESC, create_time DESC",
                    building_id,
                    now,
                )
            }
            connected = await conn.fetchval(
                "SELECT count(*) FROM control.devices WHERE building_id = $1"
                " AND session_id IS NOT NULL AND session_alive_time > $2",
                building_id,
                now - self.session_timeout,
            )
        return building, zones, commands, connected

    # ------------------------------------------------------------------ plans

    async def latest_readings(
        self, building_id: str, zone_ids: Sequence[str], since: datetime
    ) -> dict[str, tuple[resources_pb2.ZoneReading, datetime]]:
        """The newest stored reading of each of ``zone_ids`` sampled after ``since``; for when
        the cache has lost them."""
        rows = await self.pool.fetch(
            "SELECT DISTINCT ON (r->>'zone_id') r AS reading, t.sample_time"
            " FROM control.telemetry t, jsonb_array_elements(t.readings) r"
            " WHERE t.building_id = $1 AND t.sample_time > $2 AND r->>'zone_id' = ANY($3::text[])"
            " ORDER BY r->>'zone_id', t.sample_time DESC",
            building_id,
            since,
            list(zone_ids),
        )
        return {
            r["reading"]["zone_id"]: (
                from_json(r["reading"], resources_pb2.ZoneReading()),
                r["sample_time"],
            )
            for r in rows
        }

    async def publish_plan(self, plan: resources_pb2.Plan) -> None:
        """Store a plan (immutable from now on) and wake its building's watchers everywhere."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO control.plans"
                " (plan_id, building_id, create_time, status, fallback_reason, plan)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                plan.plan_id,
                plan.building_id,
                plan.create_time.ToDatetime(tzinfo=UTC),
                plan.status,
                plan.fallback_reason,
                plan.SerializeToString(),
            )
            await notify(conn, PLANS_CHANNEL, plan.building_id, "", plan.plan_id)

    async def plans_after(
        self, building_id: str, after: tuple[datetime, str], limit: int
    ) -> list[resources_pb2.Plan]:
        """Plans published after the plan keyed ``(create_time, plan_id)``, oldest first; a
        key with an empty id includes plans published at exactly that time."""
        rows = await self.pool.fetch(
            "SELECT plan FROM control.plans WHERE building_id = $1"
            " AND (create_time, plan_id) > ($2, $3) ORDER BY create_time, plan_id LIMIT $4",
            building_id,
            after[0],
            after[1],
            limit,
        )
        return [resources_pb2.Plan.FromString(r["plan"]) for r in rows]

    async def latest_plan(self, building_id: str) -> resources_pb2.Plan | None:
        row = await self.pool.fetchrow(
            "SELECT plan FROM control.plans WHERE building_id = $1"
            " ORDER BY create_time DESC, plan_id DESC LIMIT 1",
            building_id,
        )
        return resources_pb2.Plan.FromString(row["plan"]) if row else None

    async def applied_since(
        self, building_id: str, since: datetime, limit: int
    ) -> list[resources_pb2.AppliedCommand]:
        """Commands acknowledged at or after ``since``, oldest acknowledgement first."""
        rows = await self.pool.fetch(
            "SELECT * FROM control.commands WHERE building_id = $1 AND acknowledge_time >= $2"
            " ORDER BY acknowledge_time, device_id, sequence LIMIT $3",
            building_id,
            since,
            limit,
        )
        applied = []
        for row in rows:
            item = resources_pb2.AppliedCommand(
                device_id=row["device_id"],
                command=command_row(row),
                outcome=row["outcome"],
                reason=row["reason"],
            )
            item.acknowledge_time.FromDatetime(row["acknowledge_time"])
            applied.append(item)
        return applied

    async def fallback_stats(self, building_id: str, now: datetime) -> resources_pb2.FallbackStats:
        """Control intervals (published plans) and fallbacks among them: last 24 h and ever."""
        row = await self.pool.fetchrow(
            "SELECT count(*) AS total,"
            " count(*) FILTER (WHERE status = $3) AS fallbacks,"
            " count(*) FILTER (WHERE create_time > $2) AS total_24h,"
            " count(*) FILTER (WHERE status = $3 AND create_time > $2) AS fallbacks_24h,"
            " max(create_time) FILTER (WHERE status = $3) AS last_fallback"
            " FROM control.plans WHERE building_id = $1",
            building_id,
            now - timedelta(hours=24),
            resources_pb2.PLAN_STATUS_FALLBACK,
        )
        stats = resources_pb2.FallbackStats(
            intervals_24h=row["total_24h"],
            fallback_intervals_24h=row["fallbacks_24h"],
            intervals_total=row["total"],
            fallback_intervals_total=row["fallbacks"],
        )
        if row["last_fallback"] is not None:
            stats.last_fallback_time.FromDatetime(row["last_fallback"])
            stats.last_fallback_reason = await self.pool.fetchval(
                "SELECT fallback_reason FROM control.plans WHERE building_id = $1"
                " AND status = $2 ORDER BY create_time DESC LIMIT 1",
                building_id,
                resources_pb2.PLAN_STATUS_FALLBACK,
            )
        return stats
