"""Rows of the ``control`` schema as contract messages, and what every query group shares.

``Queries`` holds the pool and the reads every group needs (a building, a zone, the AIP-155
wrapper); the groups (:mod:`svc_control.store`, :mod:`svc_control.store_sessions`,
:mod:`svc_control.store_plans`) extend it and :class:`svc_control.store.Store` combines them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
from google.protobuf import json_format
from google.protobuf.message import Message
from hvac.control.v1 import resources_pb2

from svc_control.registry import (
    ControlError,
    ErrorKind,
)
from svc_control.state import override_state

COMMANDS_CHANNEL = "control_commands"
SESSIONS_CHANNEL = "control_sessions"
PLANS_CHANNEL = "control_plans"
REQUEST_ID_TTL = timedelta(hours=24)

M = TypeVar("M", bound=Message)


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def from_json(data: dict[str, Any], message: M) -> M:
    json_format.ParseDict(data, message, ignore_unknown_fields=True)
    return message


def not_found(what: str) -> ControlError:
    return ControlError(ErrorKind.NOT_FOUND, f"{what} does not exist")


@dataclass(frozen=True, slots=True)
class Once:
    """An AIP-155 idempotency key: the method, the caller's request_id, and the request."""

    method: str
    request_id: str
    request: Message

    def digest(self) -> bytes:
        copy = type(self.request)()
        copy.CopyFrom(self.request)
        copy.ClearField("request_id")
        body = self.method.encode() + b"\0" + copy.SerializeToString(deterministic=True)
        return hashlib.sha256(body).digest()


class Queries:
    """The pool, and reads shared by every query group."""

    def __init__(self, pool: asyncpg.Pool, session_timeout: timedelta) -> None:
        self.pool = pool
        self.session_timeout = session_timeout
        self._partitions: set[date] = set()

    # ------------------------------------------------------------------ idempotency (AIP-155)

    async def _once(
        self,
        once: Once | None,
        answer_type: type[M],
        act: Callable[[asyncpg.Connection], Awaitable[M]],
    ) -> M:
        """Run ``act`` in a transaction; with ``once``, store its answer with the request_id and
        return that answer to a repeat, or FAILED_PRECONDITION to a different request."""
        async with self.pool.acquire() as conn, conn.transaction():
            if once is None:
                return await act(conn)
            digest = once.digest()
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('control.request_ids'), hashtext($1))",
                once.request_id,
            )
            row = await conn.fetchrow(
                "SELECT request_sha256, response FROM control.request_ids"
                " WHERE request_id = $1 AND create_time > now() - $2::interval",
                once.request_id,
                REQUEST_ID_TTL,
            )
            if row is not None:
                if row["request_sha256"] != digest:
                    raise ControlError(
                        ErrorKind.FAILED_PRECONDITION,
                        f"request_id {once.request_id} was already used for a different request",
                    )
                return answer_type.FromString(row["response"])
            answer = await act(conn)
            await conn.execute(
                "INSERT INTO control.request_ids (request_id, method, request_sha256, response)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (request_id) DO UPDATE SET"
                " method = $2, request_sha256 = $3, response = $4, create_time = now()",
                once.request_id,
                once.method,
                digest,
                answer.SerializeToString(),
            )
            # Forget a few expired keys with every new one, so the table stays about one day long.
            await conn.execute(
                "DELETE FROM control.request_ids WHERE request_id IN (SELECT request_id"
                " FROM control.request_ids WHERE create_time < now() - $1::interval LIMIT 16)",
                REQUEST_ID_TTL,
            )
            return answer

    async def get_building(
        self, building_id: str, conn: asyncpg.Connection | None = None, lock: bool = False
    ) -> resources_pb2.Building:
        """The building; NOT_FOUND if missing. ``lock`` takes it FOR UPDATE (needs ``conn``)."""
        sql = "SELECT * FROM control.buildings WHERE building_id = $1" + (
            " FOR UPDATE" if lock else ""
        )
        row = await (conn or self.pool).fetchrow(sql, building_id)
        if row is None:
            raise not_found(f"building {building_id}")
        return building_row(row)

    async def get_zone(
        self,
        building_id: str,
        zone_id: str,
        conn: asyncpg.Connection | None = None,
        lock: bool = False,
    ) -> resources_pb2.Zone:
        row = await (conn or self.pool).fetchrow(
            "SELECT * FROM control.zones WHERE building_id = $1 AND zone_id = $2"
            + (" FOR UPDATE" if lock else ""),
            building_id,
            zone_id,
        )
        if row is None:
            await self.get_building(building_id, conn)
            raise not_found(f"zone {zone_id} of building {building_id}")
        return zone_row(row)

    async def building_exists(self, building_id: str) -> bool:
        found = await self.pool.fetchval(
            "SELECT 1 FROM control.buildings WHERE building_id = $1", building_id
        )
        return found is not None

    def _device(self, row: asyncpg.Record) -> resources_pb2.Device:
        device = from_json(row["spec"], resources_pb2.Device())
        device.firmware_version = row["firmware_version"]
        if row["last_seen_time"] is not None:
            device.last_seen_time.FromDatetime(row["last_seen_time"])
        device.connection_state = self.connection_state(
            row["session_id"] is not None,
            row["session_alive_time"],
            row["ever_connected"],
            datetime.now(UTC),
        )
        device.last_acknowledged_sequence = row["last_acknowledged_sequence"]
        device.create_time.FromDatetime(row["create_time"])
        device.update_time.FromDatetime(row["update_time"])
        return device

    def connection_state(
        self, has_session: bool, alive: datetime | None, ever: bool, now: datetime
    ) -> resources_pb2.ConnectionState.ValueType:
        if has_session and alive is not None and alive > now - self.session_timeout:
            return resources_pb2.CONNECTION_STATE_CONNECTED
        if ever:
            return resources_pb2.CONNECTION_STATE_DISCONNECTED
        return resources_pb2.CONNECTION_STATE_NEVER_CONNECTED


def spec_of(resource: Message) -> dict[str, Any]:
    """The caller-chosen part of a resource, as stored in ``spec``."""
    data = to_json(resource)
    for name in ("create_time", "update_time", "etag", "connection_state", "last_seen_time"):
        data.pop(name, None)
    for name in ("firmware_version", "last_acknowledged_sequence", "state", "cancel_time"):
        data.pop(name, None)
    return data


def building_row(row: asyncpg.Record) -> resources_pb2.Building:
    building = from_json(row["spec"], resources_pb2.Building())
    building.etag = row["etag"]
    building.create_time.FromDatetime(row["create_time"])
    building.update_time.FromDatetime(row["update_time"])
    return building


def command_row(row: asyncpg.Record) -> resources_pb2.SetpointCommand:
    command = resources_pb2.SetpointCommand(
        sequence=row["sequence"],
        zone_id=row["zone_id"],
        heating_setpoint_c=row["heating_setpoint_c"],
        cooling_setpoint_c=row["cooling_setpoint_c"],
        power_stage=row["power_stage"],
        power_kw=row["power_kw"],
        source=row["source"],
        plan_id=row["plan_id"],
        override_id=row["override_id"],
    )
    command.valid_from_time.FromDatetime(row["valid_from_time"])
    command.valid_until_time.FromDatetime(row["valid_until_time"])
    command.create_time.FromDatetime(row["create_time"])
    return command


def override_row(row: asyncpg.Record, now: datetime) -> resources_pb2.Override:
    override = from_json(row["spec"], resources_pb2.Override())
    override.override_id = str(row["override_id"])
    override.expire_time.FromDatetime(row["expire_time"])
    override.create_time.FromDatetime(row["create_time"])
    if row["cancel_time"] is not None:
        override.cancel_time.FromDatetime(row["cancel_time"])
    override.state = override_state(row["expire_time"], row["cancel_time"], now)
    return override


def zone_row(row: asyncpg.Record) -> resources_pb2.Zone:
    zone = from_json(row["spec"], resources_pb2.Zone())
    zone.etag = row["etag"]
    zone.create_time.FromDatetime(row["create_time"])
    zone.update_time.FromDatetime(row["update_time"])
    return zone


async def notify(
    conn: asyncpg.Connection, channel: str, building_id: str, device_id: str, detail: str
) -> None:
    payload = json.dumps({"b": building_id, "d": device_id, "x": detail})
    await conn.execute("SELECT pg_notify($1, $2)", channel, payload)
