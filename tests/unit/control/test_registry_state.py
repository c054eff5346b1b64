"""The live state's pure rules: override expiry and precedence, occupancy, BuildingState."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import duration_pb2
from hvac.common.v1 import common_pb2
from hvac.control.v1 import resources_pb2

from svc_control import state
from svc_control.registry import ControlError, ErrorKind

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # a Monday, 10:30 in Paris
LATER = NOW + timedelta(minutes=10)
MONDAY = 1  # google.type.DayOfWeek.MONDAY


def _zone(zone_id: str = "z1") -> resources_pb2.Zone:
    return resources_pb2.Zone(
        building_id="hq",
        zone_id=zone_id,
        floor_area_m2=100.0,
        comfort=resources_pb2.ComfortSchedule(
            occupied=common_pb2.ComfortBand(lower_c=21, upper_c=24),
            unoccupied=common_pb2.ComfortBand(lower_c=15, upper_c=30),
        ),
        safe_band=resources_pb2.SafeBand(min_c=5, max_c=35),
        equipment=resources_pb2.Equipment(
            kind=resources_pb2.EQUIPMENT_KIND_HEATING, power_stages_kw=[0.0, 2.0]
        ),
    )


def test_a_ttl_becomes_an_expire_time_from_now() -> None:
    given = resources_pb2.Override(
        building_id="hq",
        kind=resources_pb2.OVERRIDE_KIND_HOLD,
        reason="r",
        ttl=duration_pb2.Duration(seconds=600),
    )
    made = state.new_override(given, NOW, "id", "", [])
    assert made.expire_time.ToDatetime(UTC) == LATER
    assert made.WhichOneof("expiration") == "expire_time"


def test_setpoints_outside_a_covered_safe_band_are_a_failed_precondition() -> None:
    given = resources_pb2.Override(
        building_id="hq",
        kind=resources_pb2.OVERRIDE_KIND_SETPOINT,
        heating_setpoint_c=2.0,
        cooling_setpoint_c=25.0,
        reason="r",
        ttl=duration_pb2.Duration(seconds=600),
    )
    with pytest.raises(ControlError) as caught:
        state.new_override(given, NOW, "id", "", [_zone()])
    assert caught.value.kind is ErrorKind.FAILED_PRECONDITION
    given.heating_setpoint_c = 6.0
    assert state.new_override(given, NOW, "id", "", [_zone()]).heating_setpoint_c == 6.0


def test_override_state_follows_cancellation_then_expiry() -> None:
    later = NOW + timedelta(hours=1)
    assert state.override_state(later, None, NOW) == resources_pb2.OVERRIDE_STATE_ACTIVE
    assert state.override_state(NOW, None, NOW) == resources_pb2.OVERRIDE_STATE_EXPIRED
    assert state.override_state(later, NOW, NOW) == resources_pb2.OVERRIDE_STATE_CANCELLED


def _override(oid: str, zone_id: str, kind: int, minute: int) -> resources_pb2.Override:
    made = resources_pb2.Override(override_id=oid, zone_id=zone_id, kind=kind)  # type: ignore[arg-type]
    made.create_time.FromDatetime(NOW + timedelta(minutes=minute))
    made.expire_time.FromDatetime(NOW + timedelta(hours=1))
    return made


def test_precedence_is_emergency_then_zone_then_building() -> None:
    hold, setpoint = resources_pb2.OVERRIDE_KIND_HOLD, resources_pb2.OVERRIDE_KIND_SETPOINT
    building_wide = _override("b", "", hold, 3)
    zone_old = _override("z-old", "z1", hold, 1)
    zone_new = _override("z-new", "z1", setpoint, 2)
    active = [building_wide, zone_old, zone_new]
    assert state.override_in_force(active, "z1", LATER) is zone_new
    assert state.override_in_force(active, "z2", LATER) is building_wide
    emergency = _override("e", "z2", resources_pb2.OVERRIDE_KIND_EMERGENCY, 0)
    assert state.override_in_force([*active, emergency], "z2", LATER) is emergency
    assert state.override_in_force([*active, emergency], "z1", LATER) is zone_new
    assert state.override_in_force([], "z1", LATER) is None


def test_occupancy_schedules_use_the_buildings_local_time() -> None:
    zone = _zone()
    zone.occupancy_schedule.add(days=[MONDAY], start_minute_of_day=600, end_minute_of_day=660)
    assert state.occupied_by_schedule(zone, "Europe/Paris", NOW)  # 10:30 local
    assert not state.occupied_by_schedule(zone, "UTC", NOW)  # 09:30 there
    assert not state.occupied_by_schedule(zone, "Europe/Paris", NOW + timedelta(days=1))


def test_an_expired_override_no_longer_wins() -> None:
    hold = _override("h", "z1", resources_pb2.OVERRIDE_KIND_HOLD, 0)
    assert state.override_in_force([hold], "z1", NOW + timedelta(hours=2)) is None


def test_building_state_follows_plans_and_emergency_and_orders_zones() -> None:
    building = resources_pb2.Building(building_id="hq", time_zone="Europe/Paris")
    plan = resources_pb2.Plan(
        plan_id="p", status=resources_pb2.PLAN_STATUS_FALLBACK, fallback_reason="late"
    )
    reading = resources_pb2.ZoneReading(
        zone_id="z2", temperature_c=19.0, occupancy=resources_pb2.OCCUPANCY_OCCUPIED
    )
    built = state.building_state(
        building,
        [_zone("z2"), _zone("z1")],
        {},
        {"z2": (reading, NOW)},
        [],
        plan,
        resources_pb2.FallbackStats(fallback_intervals_total=1),
        2,
        common_pb2.REGION_US_EAST,
        NOW,
    )
    assert built.mode == resources_pb2.CONTROL_MODE_FALLBACK
    assert built.last_plan.fallback_reason == "late"
    assert [z.zone_id for z in built.zones] == ["z1", "z2"]
    assert built.zones[1].latest_reading.temperature_c == 19.0
    assert built.zones[1].occupancy == resources_pb2.OCCUPANCY_OCCUPIED
    emergency = _override("e", "", resources_pb2.OVERRIDE_KIND_EMERGENCY, 0)
    urgent = state.building_state(
        building,
        [],
        {},
        {},
        [emergency],
        plan,
        resources_pb2.FallbackStats(),
        0,
        common_pb2.REGION_US_EAST,
        LATER,
    )
    assert urgent.mode == resources_pb2.CONTROL_MODE_EMERGENCY
