"""The live state of a building, decided without I/O: overrides in force, occupancy, and the
`BuildingState` message assembled from what the store and the cache know."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from hvac.common.v1 import common_pb2
from hvac.control.v1 import resources_pb2

from svc_control import envelope, schedules
from svc_control.registry import ControlError, ErrorKind


def new_override(
    given: resources_pb2.Override,
    now: datetime,
    override_id: str,
    creator: str,
    covered_zones: Iterable[resources_pb2.Zone],
) -> resources_pb2.Override:
    """The override to store: its id, creator, create_time and expire_time (from ``ttl`` when
    given). Raises FAILED_PRECONDITION when a SETPOINT override asks for a temperature outside
    the safe band of a zone it covers."""
    override = resources_pb2.Override()
    override.CopyFrom(given)
    for name in ("override_id", "state", "creator", "create_time", "cancel_time"):
        override.ClearField(name)
    if given.HasField("ttl"):
        override.expire_time.FromDatetime(now + given.ttl.ToTimedelta())
    if override.kind == resources_pb2.OVERRIDE_KIND_SETPOINT:
        for zone in covered_zones:
            band = zone.safe_band
            low, high = override.heating_setpoint_c, override.cooling_setpoint_c
            if low < band.min_c or high > band.max_c:
                raise ControlError(
                    ErrorKind.FAILED_PRECONDITION,
                    f"setpoints {low}..{high} °C leave the safe band {band.min_c}..{band.max_c} °C"
                    f" of zone {zone.zone_id}",
                )
    override.override_id = override_id
    override.creator = creator
    override.create_time.FromDatetime(now)
    override.state = resources_pb2.OVERRIDE_STATE_ACTIVE
    return override


def override_state(
    expire_time: datetime, cancel_time: datetime | None, now: datetime
) -> resources_pb2.OverrideState.ValueType:
    """CANCELLED once cancelled, else EXPIRED from ``expire_time`` on, else ACTIVE."""
    if cancel_time is not None:
        return resources_pb2.OVERRIDE_STATE_CANCELLED
    if expire_time <= now:
        return resources_pb2.OVERRIDE_STATE_EXPIRED
    return resources_pb2.OVERRIDE_STATE_ACTIVE


def override_in_force(
    active: Sequence[resources_pb2.Override], zone_id: str, now: datetime
) -> resources_pb2.Override | None:
    """The override that wins for ``zone_id`` among ``active`` ones at ``now``, by the
    envelope's precedence (:func:`svc_control.envelope.override_for`); ``None`` if none."""
    by_id = {o.override_id: o for o in active}
    chosen = envelope.override_for(
        zone_id,
        [
            envelope.Override(
                override_id=o.override_id,
                kind=envelope.OverrideKind(o.kind),
                create_s=o.create_time.ToNanoseconds() / 1e9,
                expire_s=o.expire_time.ToNanoseconds() / 1e9,
                zone_id=o.zone_id or None,
            )
            for o in active
        ],
        now.timestamp(),
    )
    return by_id[chosen.override_id] if chosen is not None else None


def occupied_by_schedule(zone: resources_pb2.Zone, time_zone: str, when: datetime) -> bool:
    """Whether ``when`` falls in one of the zone's weekly occupancy windows, in the building's
    local wall-clock time."""
    local = when.astimezone(ZoneInfo(time_zone))
    windows = (schedules.WeeklyWindow.from_proto(w) for w in zone.occupancy_schedule)
    return schedules.in_any(windows, local)


def building_state(
    building: resources_pb2.Building,
    zones: Iterable[resources_pb2.Zone],
    commands: Mapping[str, resources_pb2.SetpointCommand],
    readings: Mapping[str, tuple[resources_pb2.ZoneReading, datetime]],
    active: Sequence[resources_pb2.Override],
    last_plan: resources_pb2.Plan | None,
    fallbacks: resources_pb2.FallbackStats,
    connected_devices: int,
    region: common_pb2.Region.ValueType,
    now: datetime,
) -> resources_pb2.BuildingState:
    """`BuildingState` from its parts. The mode is EMERGENCY while a building-wide EMERGENCY
    override is active, else follows the latest plan (STARTING before the first). A zone counts as
    occupied when its latest reading says so, else by its schedule."""
    state = resources_pb2.BuildingState(
        building_id=building.building_id,
        mode=resources_pb2.CONTROL_MODE_STARTING,
        serving_region=region,
        active_overrides=active,
        fallbacks=fallbacks,
        connected_devices=connected_devices,
    )
    state.state_time.FromDatetime(now)
    if last_plan is not None:
        state.last_plan.CopyFrom(
            resources_pb2.PlanSummary(
                plan_id=last_plan.plan_id,
                create_time=last_plan.create_time,
                status=last_plan.status,
                solver_backend=last_plan.solver_backend,
                fallback_reason=last_plan.fallback_reason,
                objective=last_plan.objective,
                expected_cost=last_plan.expected_cost,
            )
        )
        state.mode = (
            resources_pb2.CONTROL_MODE_FALLBACK
            if last_plan.status == resources_pb2.PLAN_STATUS_FALLBACK
            else resources_pb2.CONTROL_MODE_OPTIMIZING
        )
    if any(o.kind == resources_pb2.OVERRIDE_KIND_EMERGENCY and not o.zone_id for o in active):
        state.mode = resources_pb2.CONTROL_MODE_EMERGENCY
    for zone in sorted(zones, key=lambda z: z.zone_id):
        entry = state.zones.add(zone_id=zone.zone_id)
        sensed = resources_pb2.OCCUPANCY_UNSPECIFIED
        if zone.zone_id in readings:
            reading, sample_time = readings[zone.zone_id]
            entry.latest_reading.CopyFrom(reading)
            entry.reading_time.FromDatetime(sample_time)
            sensed = reading.occupancy
        if zone.zone_id in commands:
            entry.current_command.CopyFrom(commands[zone.zone_id])
        winner = override_in_force(active, zone.zone_id, now)
        entry.override_id = winner.override_id if winner is not None else ""
        if sensed != resources_pb2.OCCUPANCY_UNSPECIFIED:
            entry.occupancy = sensed
        elif occupied_by_schedule(zone, building.time_zone, now):
            entry.occupancy = resources_pb2.OCCUPANCY_OCCUPIED
        else:
            entry.occupancy = resources_pb2.OCCUPANCY_UNOCCUPIED
    return state


__all__ = [
    "building_state",
    "new_override",
    "occupied_by_schedule",
    "override_in_force",
    "override_state",
]
