"""Redis cache of each building's latest state: the newest reading per zone and outdoors.

PostgreSQL holds every sample; this cache answers "what is it like now" without scanning
telemetry. It only ever moves forward in sample time: a buffered old sample arriving late does
not replace a newer one. Losing the cache loses nothing but speed, so write failures are logged by
the caller, never turned into a device-visible error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio
from google.protobuf import json_format
from hvac.control.v1 import resources_pb2

# Sets each field only if the stored value is older; ARGV is (field, sample_time_ns, value)...
_SET_IF_NEWER = """
for i = 1, #ARGV, 3 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if (not current) or tonumber(string.match(current, '^(%d+)|')) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. '|' .. ARGV[i + 2])
  end
end
return 1
"""


@dataclass(frozen=True, slots=True)
class ZoneLatest:
    """The newest reading of a zone and its sample time."""

    reading: resources_pb2.ZoneReading
    sample_time: datetime


@dataclass(frozen=True, slots=True)
class BuildingLatest:
    """The newest reading per zone, and the newest outdoor temperature (°C, time) if any."""

    zones: dict[str, ZoneLatest]
    outdoor: tuple[float, datetime] | None


class StateCache:
    """The latest-state cache; every key starts with ``prefix``."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._set_if_newer = client.register_script(_SET_IF_NEWER)

    @classmethod
    def open(cls, url: str, prefix: str) -> StateCache:
        return cls(redis.asyncio.Redis.from_url(url), prefix)

    async def close(self) -> None:
        await self._client.aclose()

    def key(self, building_id: str) -> str:
        return f"{self._prefix}building:{building_id}:latest"

    async def record(
        self,
        building_id: str,
        sample_time: datetime,
        readings: Sequence[resources_pb2.ZoneReading],
        outdoor_temperature_c: float | None,
    ) -> None:
        """Remember a stored sample where it is newer than what the cache holds."""
        stamp = str(_nanoseconds(sample_time))
        args: list[str] = []
        for reading in readings:
            body = json_format.MessageToJson(reading, indent=None, preserving_proto_field_name=True)
            args += [f"zone:{reading.zone_id}", stamp, body]
        if outdoor_temperature_c is not None:
            args += ["outdoor", stamp, json.dumps(outdoor_temperature_c)]
        if args:
            await self._set_if_newer(keys=[self.key(building_id)], args=args)

    async def latest(self, building_id: str) -> BuildingLatest:
        raw: dict[bytes, bytes] = await self._client.hgetall(self.key(building_id))  # type: ignore[assignment]
        zones: dict[str, ZoneLatest] = {}
        outdoor: tuple[float, datetime] | None = None
        for field, value in raw.items():
            stamp, _, body = value.decode().partition("|")
            when = datetime.fromtimestamp(int(stamp) / 1e9, UTC)
            name = field.decode()
            if name == "outdoor":
                outdoor = (float(json.loads(body)), when)
            elif name.startswith("zone:"):
                reading = json_format.Parse(body, resources_pb2.ZoneReading())
                zones[name.removeprefix("zone:")] = ZoneLatest(reading, when)
        return BuildingLatest(zones, outdoor)

    async def forget(self, building_id: str) -> None:
        """Drop a building's entries (after it is deleted)."""
        await self._client.delete(self.key(building_id))


def _nanoseconds(when: datetime) -> int:
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
