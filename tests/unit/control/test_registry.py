"""The registry's pure rules: creation defaults, update masks, etags, overrides, page tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2
from hvac.common.v1 import common_pb2
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import resources_pb2

from svc_control import registry
from svc_control.registry import ControlError, ErrorKind

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # a Monday, 10:30 in Paris
MONDAY = 1  # google.type.DayOfWeek.MONDAY


def _building() -> resources_pb2.Building:
    return resources_pb2.Building(
        building_id="hq",
        display_name="Head office",
        home_region=common_pb2.REGION_US_EAST,
        floor_area_m2=1200.0,
        time_zone="Europe/Paris",
        tariff=resources_pb2.Tariff(currency_code="EUR", default_price_per_kwh=0.2),
    )


def _zone() -> resources_pb2.Zone:
    return resources_pb2.Zone(
        building_id="hq",
        zone_id="z1",
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


class _Expect:
    """``with _Expect(kind) as e:`` — a ControlError of that kind must be raised."""

    def __init__(self, kind: ErrorKind) -> None:
        self.kind = kind
        self.error: ControlError | None = None

    def __enter__(self) -> _Expect:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        assert isinstance(exc, ControlError), f"expected {self.kind.name}, got {exc!r}"
        assert exc.kind is self.kind, exc.message
        self.error = exc
        return True


def test_a_new_building_gets_server_fields_and_the_default_interval() -> None:
    given = _building()
    given.etag = "client-sent"
    given.create_time.FromDatetime(datetime(2001, 1, 1, tzinfo=UTC))
    stored = registry.new_building(given, NOW)
    assert stored.create_time.ToDatetime(UTC) == NOW == stored.update_time.ToDatetime(UTC)
    assert stored.etag not in ("", "client-sent")
    assert stored.control_interval.ToTimedelta() == timedelta(minutes=15)


def test_an_unknown_time_zone_names_the_field() -> None:
    given = _building()
    given.time_zone = "Atlantis/Capital"
    with _Expect(ErrorKind.INVALID_ARGUMENT) as caught:
        registry.new_building(given, NOW)
    assert caught.error is not None
    assert [v.field for v in caught.error.violations] == ["building.time_zone"]


def test_a_mask_changes_only_what_it_names() -> None:
    stored = registry.new_building(_building(), NOW)
    patch = resources_pb2.Building(display_name="New", peak_power_cap_kw=50.0)
    updated = registry.updated_building(stored, patch, ["display_name"], NOW)
    assert (updated.display_name, updated.peak_power_cap_kw) == ("New", 0.0)
    assert updated.etag != stored.etag
    assert updated.create_time == stored.create_time


def test_no_mask_changes_every_field_the_patch_sets() -> None:
    stored = registry.new_building(_building(), NOW)
    patch = resources_pb2.Building(peak_power_cap_kw=50.0)
    updated = registry.updated_building(stored, patch, [], NOW)
    assert (updated.display_name, updated.peak_power_cap_kw) == ("Head office", 50.0)


def test_the_star_mask_resets_an_unset_interval_to_the_default() -> None:
    given = _building()
    given.control_interval.CopyFrom(duration_pb2.Duration(seconds=300))
    stored = registry.new_building(given, NOW)
    patch = _building()
    patch.display_name = ""
    updated = registry.updated_building(stored, patch, ["*"], NOW)
    assert updated.control_interval.ToTimedelta() == timedelta(minutes=15)
    assert updated.display_name == ""


def test_a_stale_etag_is_aborted() -> None:
    stored = registry.new_building(_building(), NOW)
    patch = resources_pb2.Building(display_name="x", etag="stale")
    with _Expect(ErrorKind.ABORTED):
        registry.updated_building(stored, patch, [], NOW)
    patch.etag = stored.etag
    assert registry.updated_building(stored, patch, [], NOW).display_name == "x"


def test_the_home_region_cannot_change_but_may_be_echoed() -> None:
    stored = registry.new_building(_building(), NOW)
    echoed = resources_pb2.Building(home_region=common_pb2.REGION_US_EAST, display_name="y")
    assert registry.updated_building(stored, echoed, [], NOW).display_name == "y"
    moved = resources_pb2.Building(home_region=common_pb2.REGION_EU_WEST)
    with _Expect(ErrorKind.INVALID_ARGUMENT):
        registry.updated_building(stored, moved, [], NOW)


def test_overlapping_tariff_periods_are_refused_after_merging() -> None:
    window = resources_pb2.WeeklyWindow(
        days=[MONDAY], start_minute_of_day=600, end_minute_of_day=900
    )
    later = resources_pb2.WeeklyWindow(
        days=[MONDAY], start_minute_of_day=800, end_minute_of_day=1000
    )
    tariff = resources_pb2.Tariff(
        currency_code="EUR",
        default_price_per_kwh=0.1,
        periods=[
            resources_pb2.TimeOfUsePeriod(price_per_kwh=0.3, window=window),
            resources_pb2.TimeOfUsePeriod(price_per_kwh=0.2, window=later),
        ],
    )
    stored = registry.new_building(_building(), NOW)
    with _Expect(ErrorKind.INVALID_ARGUMENT) as caught:
        registry.updated_building(stored, resources_pb2.Building(tariff=tariff), ["tariff"], NOW)
    assert caught.error is not None
    assert [v.field for v in caught.error.violations] == ["building.tariff"]


def test_a_zone_update_must_leave_a_valid_zone() -> None:
    stored = registry.new_zone(_zone(), NOW)
    narrow = resources_pb2.Zone(safe_band=resources_pb2.SafeBand(min_c=18, max_c=26))
    with _Expect(ErrorKind.INVALID_ARGUMENT) as caught:
        registry.updated_zone(stored, narrow, ["safe_band"], NOW)
    assert caught.error is not None
    assert [v.field for v in caught.error.violations] == ["zone.safe_band"]
    wide = resources_pb2.Zone(safe_band=resources_pb2.SafeBand(min_c=0, max_c=40))
    assert registry.updated_zone(stored, wide, ["safe_band"], NOW).safe_band.max_c == 40


def test_repeated_fields_are_replaced_whole() -> None:
    given = _zone()
    given.occupancy_schedule.add(days=[1], start_minute_of_day=0, end_minute_of_day=60)
    stored = registry.new_zone(given, NOW)
    cleared = registry.updated_zone(stored, resources_pb2.Zone(), ["occupancy_schedule"], NOW)
    assert list(cleared.occupancy_schedule) == []


def test_reregistration_keeps_what_the_service_knows_about_the_device() -> None:
    first = registry.new_device(
        resources_pb2.Device(
            building_id="hq",
            device_id="gw",
            kind=resources_pb2.DEVICE_KIND_BMS_GATEWAY,
            zone_ids=["z1"],
        ),
        NOW,
        None,
    )
    assert first.connection_state == resources_pb2.CONNECTION_STATE_NEVER_CONNECTED
    first.last_acknowledged_sequence = 7
    later = NOW + timedelta(hours=1)
    again = registry.new_device(
        resources_pb2.Device(
            building_id="hq",
            device_id="gw",
            kind=resources_pb2.DEVICE_KIND_THERMOSTAT,
            zone_ids=["z2"],
        ),
        later,
        first,
    )
    assert (again.kind, list(again.zone_ids), again.last_acknowledged_sequence) == (2, ["z2"], 7)
    assert again.create_time == first.create_time
    assert again.update_time.ToDatetime(UTC) == later


def test_page_tokens_round_trip_and_are_bound_to_the_request() -> None:
    request = ctl.ListZonesRequest(building_id="hq", page_size=2)
    token = registry.next_page_token(request, ["z2"])
    follow = ctl.ListZonesRequest(building_id="hq", page_size=5, page_token=token)
    assert registry.page_of(follow) == registry.Page(("z2",), 5)
    other = ctl.ListZonesRequest(building_id="annex", page_token=token)
    with _Expect(ErrorKind.INVALID_ARGUMENT):
        registry.page_of(other)
    with _Expect(ErrorKind.INVALID_ARGUMENT):
        registry.page_of(ctl.ListZonesRequest(building_id="hq", page_token="%%%"))


def test_page_sizes_default_to_50_and_stop_at_1000() -> None:
    assert registry.page_of(ctl.ListBuildingsRequest()).size == 50
    assert registry.page_of(ctl.ListBuildingsRequest(page_size=5000)).size == 1000


def test_a_command_names_what_makes_it_impossible() -> None:
    command = registry.NewCommand(
        zone_id="z1",
        heating_setpoint_c=24.0,
        cooling_setpoint_c=21.0,
        power_stage=4,
        power_kw=1.0,
        valid_from_time=NOW,
        valid_until_time=NOW,
        source=resources_pb2.COMMAND_SOURCE_UNSPECIFIED,
    )
    assert len(command.problems(stages=3)) == 4
