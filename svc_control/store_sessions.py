"""Device sessions in PostgreSQL: session ownership, command streams, acknowledgements,
telemetry. Sequences and acknowledgements are rows, so any instance can resume any device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from hvac.control.v1 import control_service_pb2, resources_pb2

from svc_control.registry import (
    ControlError,
    ErrorKind,
    NewCommand,
)
from svc_control.store_rows import (
    COMMANDS_CHANNEL,
    PLANS_CHANNEL,
    SESSIONS_CHANNEL,
    Queries,
    command_row,
    from_json,
    not_found,
    notify,
    to_json,
)


@dataclass(frozen=True, slots=True)
class SessionStart:
    """What a newly opened session resumes from."""

    resume_from_sequence: int
    last_telemetry_sequence: int
    # zone_id -> number of power stages, for every zone the device serves.
    zone_stages: dict[str, int]
    building_zones: frozenset[str]


class SessionQueries(Queries):
    """What `Connect` and the command issuers read and write."""

    async def open_session(
        self,
        building_id: str,
        device_id: str,
        session_id: str,
        last_applied_sequence: int,
        firmware_version: str,
        now: datetime,
    ) -> SessionStart:
        """Make ``session_id`` the device's one session and acknowledge every command up to
        ``last_applied_sequence``. NOT_FOUND for an unregistered device, ABORTED when the device
        claims a command never issued. Other sessions of the device hear they are superseded."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT last_issued_sequence, last_acknowledged_sequence FROM control.devices"
                " WHERE building_id = $1 AND device_id = $2 FOR UPDATE",
                building_id,
                device_id,
            )
            if row is None:
                await self.get_building(building_id, conn)
                raise not_found(f"device {device_id} of building {building_id}")
            issued, acknowledged = row["last_issued_sequence"], row["last_acknowledged_sequence"]
            if last_applied_sequence > issued:
                raise ControlError(
                    ErrorKind.ABORTED,
                    f"last_applied_sequence {last_applied_sequence} is above the last command "
                    f"issued to the device ({issued}); this region may lag, reconnect with backoff",
                )
            if last_applied_sequence > acknowledged:
                await conn.execute(
                    "UPDATE control.commands SET outcome = $4, acknowledge_time = $5"
                    " WHERE building_id = $1 AND device_id = $2 AND sequence <= $3"
                    " AND outcome IS NULL",
                    building_id,
                    device_id,
                    last_applied_sequence,
                    resources_pb2.COMMAND_OUTCOME_APPLIED,
                    now,
                )
                acknowledged = last_applied_sequence
                await notify(conn, PLANS_CHANNEL, building_id, device_id, "acknowledged")
            await conn.execute(
                "UPDATE control.devices SET session_id = $3, session_alive_time = $4,"
                " last_seen_time = $4, ever_connected = true, firmware_version = $5,"
                " last_acknowledged_sequence = $6 WHERE building_id = $1 AND device_id = $2",
                building_id,
                device_id,
                session_id,
                now,
                firmware_version,
                acknowledged,
            )
            last_telemetry = await conn.fetchval(
                "SELECT coalesce(max(sequence), 0) FROM control.telemetry_sequences"
                " WHERE building_id = $1 AND device_id = $2",
                building_id,
                device_id,
            )
            stages, zones = await self._zones_of(conn, building_id, device_id)
            await notify(conn, SESSIONS_CHANNEL, building_id, device_id, session_id)
        return SessionStart(acknowledged + 1, last_telemetry, stages, zones)

    async def served_zones(
        self, building_id: str, device_id: str
    ) -> tuple[dict[str, int], frozenset[str]]:
        """Zones the device serves (with their number of power stages), and all the building's."""
        async with self.pool.acquire() as conn:
            return await self._zones_of(conn, building_id, device_id)

    async def _zones_of(
        self, conn: asyncpg.Connection, building_id: str, device_id: str
    ) -> tuple[dict[str, int], frozenset[str]]:
        rows = await conn.fetch(
            "SELECT z.zone_id, jsonb_array_length(z.spec->'equipment'->'power_stages_kw') AS n,"
            " dz.device_id IS NOT NULL AS served FROM control.zones z"
            " LEFT JOIN control.device_zones dz ON dz.building_id = z.building_id"
            " AND dz.zone_id = z.zone_id AND dz.device_id = $2 WHERE z.building_id = $1",
            building_id,
            device_id,
        )
        stages = {r["zone_id"]: r["n"] for r in rows if r["served"]}
        return stages, frozenset(r["zone_id"] for r in rows)

    async def session_tick(
        self, building_id: str, device_id: str, session_id: str, seen: datetime | None
    ) -> str:
        """Refresh a session's liveness; ``"current"``, ``"superseded"`` or ``"deleted"``."""
        async with self.pool.acquire() as conn:
            current = await conn.fetchrow(
                "UPDATE control.devices SET session_alive_time = now(),"
                " last_seen_time = greatest(last_seen_time, $4)"
                " WHERE building_id = $1 AND device_id = $2 AND session_id = $3 RETURNING 1",
                building_id,
                device_id,
                session_id,
                seen,
            )
            if current is not None:
                return "current"
            exists = await conn.fetchval(
                "SELECT 1 FROM control.devices WHERE building_id = $1 AND device_id = $2",
                building_id,
                device_id,
            )
            return "superseded" if exists else "deleted"

    async def close_session(
        self, building_id: str, device_id: str, session_id: str, seen: datetime | None
    ) -> None:
        """Mark the device disconnected, unless a newer session has taken over."""
        await self.pool.execute(
            "UPDATE control.devices SET session_id = NULL, session_alive_time = NULL,"
            " last_seen_time = greatest(last_seen_time, $4)"
            " WHERE building_id = $1 AND device_id = $2 AND session_id = $3",
            building_id,
            device_id,
            session_id,
            seen,
        )

    async def commands_from(
        self, building_id: str, device_id: str, first_sequence: int, limit: int
    ) -> list[resources_pb2.SetpointCommand]:
        """The device's commands from ``first_sequence`` on, in sequence order."""
        rows = await self.pool.fetch(
            "SELECT * FROM control.commands WHERE building_id = $1 AND device_id = $2"
            " AND sequence >= $3 ORDER BY sequence LIMIT $4",
            building_id,
            device_id,
            first_sequence,
            limit,
        )
        return [command_row(r) for r in rows]

    async def acknowledge(
        self,
        building_id: str,
        device_id: str,
        sequence: int,
        outcome: int,
        reason: str,
        now: datetime,
    ) -> bool:
        """Record the answer to command ``sequence`` if it is the next unacknowledged one;
        ``False`` if the stored state disagrees (another session acknowledged meanwhile)."""
        async with self.pool.acquire() as conn, conn.transaction():
            moved = await conn.fetchval(
                "UPDATE control.devices SET last_acknowledged_sequence = $3, last_seen_time = $4"
                " WHERE building_id = $1 AND device_id = $2"
                " AND last_acknowledged_sequence = $3 - 1 AND last_issued_sequence >= $3"
                " RETURNING 1",
                building_id,
                device_id,
                sequence,
                now,
            )
            if moved is None:
                return False
            await conn.execute(
                "UPDATE control.commands SET outcome = $4, reason = $5, acknowledge_time = $6"
                " WHERE building_id = $1 AND device_id = $2 AND sequence = $3",
                building_id,
                device_id,
                sequence,
                outcome,
                reason,
                now,
            )
            await notify(conn, PLANS_CHANNEL, building_id, device_id, "acknowledged")
            return True

    async def store_telemetry(
        self,
        building_id: str,
        device_id: str,
        sample: control_service_pb2.Telemetry,
        now: datetime,
    ) -> bool:
        """Store a ``Telemetry`` sample whole; ``False`` if its sequence was stored before."""
        sample_time: datetime = sample.sample_time.ToDatetime(tzinfo=UTC)
        day = sample_time.date()
        async with self.pool.acquire() as conn:
            if day not in self._partitions:
                await conn.execute("SELECT control.ensure_telemetry_partition($1)", day)
                self._partitions.add(day)
            # One statement, so one round trip and atomic: the sample row is written only if
            # its sequence row is new.
            stored = await conn.fetchval(
                "WITH fresh AS (INSERT INTO control.telemetry_sequences"
                " (building_id, device_id, sequence, sample_time) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT DO NOTHING RETURNING 1)"
                " INSERT INTO control.telemetry (building_id, device_id, sequence, sample_time,"
                " receive_time, outdoor_temperature_c, readings)"
                " SELECT $1, $2, $3, $4, $5, $6, $7 FROM fresh RETURNING 1",
                building_id,
                device_id,
                sample.sequence,
                sample_time,
                now,
                sample.outdoor_temperature_c if sample.HasField("outdoor_temperature_c") else None,
                [to_json(r) for r in sample.readings],
            )
            return stored is not None

    async def telemetry_between(
        self, building_id: str, start: datetime, end: datetime, limit: int = 100_000
    ) -> list[tuple[str, control_service_pb2.Telemetry]]:
        """Stored samples of the building with ``start <= sample_time < end``, oldest first, as
        ``(device_id, sample)``: the history the control loop learns from after a restart."""
        rows = await self.pool.fetch(
            "SELECT * FROM control.telemetry WHERE building_id = $1 AND sample_time >= $2"
            " AND sample_time < $3 ORDER BY sample_time, device_id, sequence LIMIT $4",
            building_id,
            start,
            end,
            limit,
        )
        found = []
        for row in rows:
            sample = control_service_pb2.Telemetry(
                sequence=row["sequence"],
                readings=[from_json(r, resources_pb2.ZoneReading()) for r in row["readings"]],
            )
            sample.sample_time.FromDatetime(row["sample_time"])
            if row["outdoor_temperature_c"] is not None:
                sample.outdoor_temperature_c = row["outdoor_temperature_c"]
            found.append((row["device_id"], sample))
        return found

    async def issue_commands(
        self, building_id: str, commands: Sequence[NewCommand], now: datetime
    ) -> tuple[list[tuple[str, resources_pb2.SetpointCommand]], list[str]]:
        """Number and store ``commands`` for the devices commanding their zones, in the order
        given, in one transaction. Returns ``(device_id, command)`` per issued command and the
        zones no device commands (their commands are not issued). Raises ValueError for a
        command that cannot be sent (unknown zone, stage out of range, empty validity)."""
        issued: list[tuple[str, resources_pb2.SetpointCommand]] = []
        unserved: list[str] = []
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT z.zone_id, jsonb_array_length(z.spec->'equipment'->'power_stages_kw')"
                " AS n, dz.device_id FROM control.zones z LEFT JOIN control.device_zones dz"
                " ON dz.building_id = z.building_id AND dz.zone_id = z.zone_id AND dz.commands"
                " WHERE z.building_id = $1",
                building_id,
            )
            zones = {r["zone_id"]: (r["n"], r["device_id"]) for r in rows}
            devices = sorted({d for _, d in zones.values() if d is not None})
            # Lock in one order so concurrent issuers never deadlock; the lock also makes
            # sequence numbers commit in order, so a reader never sees a gap.
            sequences = {
                r["device_id"]: r["last_issued_sequence"]
                for r in await conn.fetch(
                    "SELECT device_id, last_issued_sequence FROM control.devices"
                    " WHERE building_id = $1 AND device_id = ANY($2::text[])"
                    " ORDER BY device_id FOR UPDATE",
                    building_id,
                    devices,
                )
            }
            for command in commands:
                if command.zone_id not in zones:
                    raise ValueError(f"zone {command.zone_id} of {building_id} does not exist")
                stages, device_id = zones[command.zone_id]
                problems = command.problems(stages)
                if problems:
                    raise ValueError(f"command for zone {command.zone_id}: {'; '.join(problems)}")
                if device_id is None:
                    unserved.append(command.zone_id)
                    continue
                sequences[device_id] += 1
                stored = await conn.fetchrow(
                    "INSERT INTO control.commands (building_id, device_id, sequence, zone_id,"
                    " heating_setpoint_c, cooling_setpoint_c, power_stage, power_kw,"
                    " valid_from_time, valid_until_time, source, plan_id, override_id,"
                    " create_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
                    " $13, $14) RETURNING *",
                    building_id,
                    device_id,
                    sequences[device_id],
                    command.zone_id,
                    command.heating_setpoint_c,
                    command.cooling_setpoint_c,
                    command.power_stage,
                    command.power_kw,
                    command.valid_from_time,
                    command.valid_until_time,
                    command.source,
                    command.plan_id,
                    command.override_id,
                    now,
                )
                issued.append((device_id, command_row(stored)))
            for device_id in {d for d, _ in issued}:
                await conn.execute(
                    "UPDATE control.devices SET last_issued_sequence = $3"
                    " WHERE building_id = $1 AND device_id = $2",
                    building_id,
                    device_id,
                    sequences[device_id],
                )
                await notify(conn, COMMANDS_CHANNEL, building_id, device_id, "")
        return issued, unserved
