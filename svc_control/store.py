"""PostgreSQL for the control service (schema ``control``); with ``store_*`` the only SQL.

Everything a device session needs to survive a reconnect lives in the database, not in a
process: command sequences, acknowledgements and the current session of each device. Two
instances (two regions) on one database therefore agree on what each device has missed. Changes
other instances must hear about promptly are announced with ``NOTIFY`` (delivered on commit);
sessions also poll, so a lost notification delays a command by at most one heartbeat interval and
loses nothing.

This module opens the store (migrations first) and holds the registry: buildings, zones,
devices. Sessions are in :mod:`svc_control.store_sessions`, overrides and plans in
:mod:`svc_control.store_plans`, row conversions in :mod:`svc_control.store_rows`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from hvac.control.v1 import resources_pb2

from meshkit.migrations import migrate
from svc_control.registry import (
    ControlError,
    ErrorKind,
    NewCommand,
    Page,
    check_etag,
)
from svc_control.store_plans import PlanQueries
from svc_control.store_rows import (
    COMMANDS_CHANNEL,
    PLANS_CHANNEL,
    SESSIONS_CHANNEL,
    Once,
    building_row,
    not_found,
    notify,
    spec_of,
    zone_row,
)
from svc_control.store_sessions import SessionQueries, SessionStart

MIGRATIONS = Path(__file__).with_name("migrations")


class Store(SessionQueries, PlanQueries):
    """A pool of connections to the ``control`` schema, with one method per question asked."""

    @classmethod
    async def open(cls, dsn: str, pool_size: int, session_timeout: timedelta) -> Store:
        """Apply pending migrations (under an advisory lock), then open the pool."""
        await migrate(dsn, "control", MIGRATIONS)

        async def setup(conn: asyncpg.Connection) -> None:
            await conn.set_type_codec(
                "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )

        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, init=setup)
        return cls(pool, session_timeout)

    async def close(self) -> None:
        await self.pool.close()

    # ------------------------------------------------------------------ buildings

    async def create_building(
        self, building: resources_pb2.Building, once: Once | None = None
    ) -> resources_pb2.Building:
        """Insert ``building``; ALREADY_EXISTS if its id is taken."""

        async def act(conn: asyncpg.Connection) -> resources_pb2.Building:
            try:
                await conn.execute(
                    "INSERT INTO control.buildings"
                    " (building_id, home_region, spec, etag, create_time, update_time)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    building.building_id,
                    building.home_region,
                    spec_of(building),
                    building.etag,
                    building.create_time.ToDatetime(tzinfo=UTC),
                    building.update_time.ToDatetime(tzinfo=UTC),
                )
            except asyncpg.UniqueViolationError:
                raise ControlError(
                    ErrorKind.ALREADY_EXISTS, f"building {building.building_id} already exists"
                ) from None
            return building

        return await self._once(once, resources_pb2.Building, act)

    async def list_buildings(
        self, page: Page, home_region: int
    ) -> tuple[list[resources_pb2.Building], bool]:
        """A page ordered by building_id, and whether more follow."""
        rows = await self.pool.fetch(
            "SELECT * FROM control.buildings WHERE building_id > $1"
            " AND ($2 = 0 OR home_region = $2) ORDER BY building_id LIMIT $3",
            page.after[0] if page.after else "",
            home_region,
            page.size + 1,
        )
        return [building_row(r) for r in rows[: page.size]], len(rows) > page.size

    async def update_building(
        self,
        building_id: str,
        change: Callable[[resources_pb2.Building], resources_pb2.Building],
    ) -> resources_pb2.Building:
        """Read the building FOR UPDATE, store ``change(stored)``; ``change`` may raise."""
        async with self.pool.acquire() as conn, conn.transaction():
            building = change(await self.get_building(building_id, conn, lock=True))
            await conn.execute(
                "UPDATE control.buildings SET spec = $2, etag = $3, update_time = $4"
                " WHERE building_id = $1",
                building_id,
                spec_of(building),
                building.etag,
                building.update_time.ToDatetime(tzinfo=UTC),
            )
            return building

    async def delete_building(self, building_id: str, etag: str) -> None:
        """NOT_FOUND, ABORTED on a stale etag, FAILED_PRECONDITION while zones or devices remain."""
        async with self.pool.acquire() as conn, conn.transaction():
            stored = await self.get_building(building_id, conn, lock=True)
            check_etag(f"building {building_id}", stored.etag, etag)
            try:
                await conn.execute(
                    "DELETE FROM control.buildings WHERE building_id = $1", building_id
                )
            except asyncpg.ForeignKeyViolationError:
                raise ControlError(
                    ErrorKind.FAILED_PRECONDITION,
                    f"building {building_id} still has zones or devices; delete them first",
                ) from None

    # ------------------------------------------------------------------ zones

    async def create_zone(
        self, zone: resources_pb2.Zone, once: Once | None = None
    ) -> resources_pb2.Zone:
        """Insert ``zone``; NOT_FOUND without its building, ALREADY_EXISTS if the id is taken."""

        async def act(conn: asyncpg.Connection) -> resources_pb2.Zone:
            await self.get_building(zone.building_id, conn, lock=True)
            try:
                await conn.execute(
                    "INSERT INTO control.zones"
                    " (building_id, zone_id, spec, etag, create_time, update_time)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    zone.building_id,
                    zone.zone_id,
                    spec_of(zone),
                    zone.etag,
                    zone.create_time.ToDatetime(tzinfo=UTC),
                    zone.update_time.ToDatetime(tzinfo=UTC),
                )
            except asyncpg.UniqueViolationError:
                raise ControlError(
                    ErrorKind.ALREADY_EXISTS,
                    f"zone {zone.zone_id} already exists in building {zone.building_id}",
                ) from None
            return zone

        return await self._once(once, resources_pb2.Zone, act)

    async def list_zones(
        self, building_id: str, page: Page | None = None
    ) -> tuple[list[resources_pb2.Zone], bool]:
        """A page of a building's zones by zone_id (all of them without ``page``); NOT_FOUND."""
        async with self.pool.acquire() as conn:
            await self.get_building(building_id, conn)
            rows = await conn.fetch(
                "SELECT * FROM control.zones WHERE building_id = $1 AND zone_id > $2"
                " ORDER BY zone_id LIMIT $3",
                building_id,
                page.after[0] if page and page.after else "",
                page.size + 1 if page else None,
            )
        size = page.size if page else len(rows)
        return [zone_row(r) for r in rows[:size]], len(rows) > size

    async def update_zone(
        self,
        building_id: str,
        zone_id: str,
        change: Callable[[resources_pb2.Zone], resources_pb2.Zone],
    ) -> resources_pb2.Zone:
        async with self.pool.acquire() as conn, conn.transaction():
            zone = change(await self.get_zone(building_id, zone_id, conn, lock=True))
            await conn.execute(
                "UPDATE control.zones SET spec = $3, etag = $4, update_time = $5"
                " WHERE building_id = $1 AND zone_id = $2",
                building_id,
                zone_id,
                spec_of(zone),
                zone.etag,
                zone.update_time.ToDatetime(tzinfo=UTC),
            )
            return zone

    async def delete_zone(self, building_id: str, zone_id: str, etag: str, now: datetime) -> None:
        """Delete a zone and cancel the overrides naming it. FAILED_PRECONDITION while a device
        serves it; NOT_FOUND; ABORTED on a stale etag."""
        async with self.pool.acquire() as conn, conn.transaction():
            stored = await self.get_zone(building_id, zone_id, conn, lock=True)
            check_etag(f"zone {building_id}/{zone_id}", stored.etag, etag)
            try:
                await conn.execute(
                    "DELETE FROM control.zones WHERE building_id = $1 AND zone_id = $2",
                    building_id,
                    zone_id,
                )
            except asyncpg.ForeignKeyViolationError:
                raise ControlError(
                    ErrorKind.FAILED_PRECONDITION,
                    f"zone {zone_id} is still served by a device; re-register it without the zone",
                ) from None
            await conn.execute(
                "UPDATE control.overrides SET cancel_time = $3 WHERE building_id = $1"
                " AND zone_id = $2 AND cancel_time IS NULL AND expire_time > $3",
                building_id,
                zone_id,
                now,
            )

    # ------------------------------------------------------------------ devices

    async def register_device(
        self,
        building_id: str,
        device_id: str,
        make: Callable[[resources_pb2.Device | None], resources_pb2.Device],
    ) -> resources_pb2.Device:
        """Insert or replace a registration built by ``make(previous)``. NOT_FOUND for a missing
        building or zone, FAILED_PRECONDITION if another device already commands a zone."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self.get_building(building_id, conn, lock=True)
            row = await conn.fetchrow(
                "SELECT * FROM control.devices WHERE building_id = $1 AND device_id = $2"
                " FOR UPDATE",
                building_id,
                device_id,
            )
            device = make(self._device(row) if row else None)
            known = {
                r["zone_id"]
                for r in await conn.fetch(
                    "SELECT zone_id FROM control.zones WHERE building_id = $1", building_id
                )
            }
            missing = [z for z in device.zone_ids if z not in known]
            if missing:
                raise not_found(f"zone {missing[0]} of building {building_id}")
            await conn.execute(
                "INSERT INTO control.devices"
                " (building_id, device_id, kind, spec, create_time, update_time)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (building_id, device_id)"
                " DO UPDATE SET kind = $3, spec = $4, update_time = $6",
                building_id,
                device_id,
                device.kind,
                spec_of(device),
                device.create_time.ToDatetime(tzinfo=UTC),
                device.update_time.ToDatetime(tzinfo=UTC),
            )
            await conn.execute(
                "DELETE FROM control.device_zones WHERE building_id = $1 AND device_id = $2",
                building_id,
                device_id,
            )
            commands = device.kind != resources_pb2.DEVICE_KIND_SENSOR
            try:
                await conn.executemany(
                    "INSERT INTO control.device_zones (building_id, device_id, zone_id, commands)"
                    " VALUES ($1, $2, $3, $4)",
                    [(building_id, device_id, z, commands) for z in device.zone_ids],
                )
            except asyncpg.UniqueViolationError:
                raise ControlError(
                    ErrorKind.FAILED_PRECONDITION,
                    "a zone of this device is already commanded by another non-sensor device",
                ) from None
            await notify(conn, SESSIONS_CHANNEL, building_id, device_id, "registered")
            return device

    async def get_device(self, building_id: str, device_id: str) -> resources_pb2.Device:
        row = await self.pool.fetchrow(
            "SELECT * FROM control.devices WHERE building_id = $1 AND device_id = $2",
            building_id,
            device_id,
        )
        if row is None:
            await self.get_building(building_id)
            raise not_found(f"device {device_id} of building {building_id}")
        return self._device(row)

    async def list_devices(
        self, building_id: str, page: Page
    ) -> tuple[list[resources_pb2.Device], bool]:
        async with self.pool.acquire() as conn:
            await self.get_building(building_id, conn)
            rows = await conn.fetch(
                "SELECT * FROM control.devices WHERE building_id = $1 AND device_id > $2"
                " ORDER BY device_id LIMIT $3",
                building_id,
                page.after[0] if page.after else "",
                page.size + 1,
            )
        return [self._device(r) for r in rows[: page.size]], len(rows) > page.size

    async def delete_device(self, building_id: str, device_id: str) -> None:
        """Delete a device and its unacknowledged commands; its open session hears of it."""
        async with self.pool.acquire() as conn, conn.transaction():
            deleted = await conn.fetchval(
                "DELETE FROM control.devices WHERE building_id = $1 AND device_id = $2 RETURNING 1",
                building_id,
                device_id,
            )
            if deleted is None:
                await self.get_building(building_id, conn)
                raise not_found(f"device {device_id} of building {building_id}")
            await notify(conn, SESSIONS_CHANNEL, building_id, device_id, "")


__all__ = [
    "COMMANDS_CHANNEL",
    "MIGRATIONS",
    "PLANS_CHANNEL",
    "SESSIONS_CHANNEL",
    "NewCommand",
    "Once",
    "SessionStart",
    "Store",
    "not_found",
]
