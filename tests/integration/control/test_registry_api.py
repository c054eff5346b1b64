"""Registry RPCs against real PostgreSQL: CRUD with precise statuses, masks, etags, request_id."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.rpc import error_details_pb2, status_pb2
from hvac.common.v1 import common_pb2
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import resources_pb2

from tests.integration.control.conftest import Instance
from tests.integration.control.resources import building, device, zone

pytestmark = pytest.mark.integration


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


def _violations(error: grpc.aio.AioRpcError) -> list[str]:
    trailer = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    bad = error_details_pb2.BadRequest()
    for detail in status_pb2.Status.FromString(trailer).details:
        if detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
    return [v.field for v in bad.field_violations]


async def test_a_created_building_reads_back_with_defaults_and_an_etag(control: Instance) -> None:
    created = await control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    stored = created.building
    assert stored.etag and stored.create_time.seconds > 0
    assert stored.control_interval.ToSeconds() == 15 * 60
    read = await control.stub.GetBuilding(ctl.GetBuildingRequest(building_id="hq"))
    assert read.building == stored


async def test_creating_a_taken_building_id_is_already_exists(control: Instance) -> None:
    await control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    again = control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    assert await _code(again) == grpc.StatusCode.ALREADY_EXISTS


async def test_an_unknown_time_zone_is_invalid_argument_on_that_field(control: Instance) -> None:
    request = ctl.CreateBuildingRequest(building=building(time_zone="Mars/Olympus"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await control.stub.CreateBuilding(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ["building.time_zone"]
    assert await _code(control.stub.GetBuilding(ctl.GetBuildingRequest(building_id="hq"))) == (
        grpc.StatusCode.NOT_FOUND
    )


async def test_a_repeated_request_id_returns_the_first_answer_and_acts_once(
    control: Instance,
) -> None:
    request_id = str(uuid.uuid4())
    request = ctl.CreateBuildingRequest(building=building(), request_id=request_id)
    first = await control.stub.CreateBuilding(request)
    second = await control.stub.CreateBuilding(request)
    assert second == first
    listed = await control.stub.ListBuildings(ctl.ListBuildingsRequest())
    assert [b.building_id for b in listed.buildings] == ["hq"]


async def test_a_request_id_reused_for_another_request_is_failed_precondition(
    control: Instance,
) -> None:
    request_id = str(uuid.uuid4())
    await control.stub.CreateBuilding(
        ctl.CreateBuildingRequest(building=building("a"), request_id=request_id)
    )
    other = ctl.CreateBuildingRequest(building=building("b"), request_id=request_id)
    assert await _code(control.stub.CreateBuilding(other)) == grpc.StatusCode.FAILED_PRECONDITION
    assert await _code(control.stub.GetBuilding(ctl.GetBuildingRequest(building_id="b"))) == (
        grpc.StatusCode.NOT_FOUND
    )


async def test_update_changes_only_the_masked_fields(control: Instance) -> None:
    await control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    patch = resources_pb2.Building(
        building_id="hq", display_name="Renamed", floor_area_m2=999.0, peak_power_cap_kw=40.0
    )
    updated = await control.stub.UpdateBuilding(
        ctl.UpdateBuildingRequest(
            building=patch, update_mask=field_mask_pb2.FieldMask(paths=["peak_power_cap_kw"])
        )
    )
    assert updated.building.peak_power_cap_kw == 40.0
    assert updated.building.display_name == "Head office"
    assert updated.building.floor_area_m2 == 1200.0


async def test_update_without_a_mask_changes_the_fields_that_are_set(control: Instance) -> None:
    await control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    patch = resources_pb2.Building(
        building_id="hq", control_interval=duration_pb2.Duration(seconds=300)
    )
    updated = await control.stub.UpdateBuilding(ctl.UpdateBuildingRequest(building=patch))
    assert updated.building.control_interval.ToSeconds() == 300
    assert updated.building.time_zone == "Europe/Paris"


async def test_a_stale_etag_is_aborted_and_changes_nothing(control: Instance) -> None:
    created = await control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    etag = created.building.etag
    patch = resources_pb2.Building(building_id="hq", display_name="First", etag=etag)
    first = await control.stub.UpdateBuilding(ctl.UpdateBuildingRequest(building=patch))
    assert first.building.etag != etag
    patch.display_name = "Second"
    repeat = control.stub.UpdateBuilding(ctl.UpdateBuildingRequest(building=patch))
    assert await _code(repeat) == grpc.StatusCode.ABORTED
    read = await control.stub.GetBuilding(ctl.GetBuildingRequest(building_id="hq"))
    assert read.building.display_name == "First"
    stale_delete = ctl.DeleteBuildingRequest(building_id="hq", etag=etag)
    assert await _code(control.stub.DeleteBuilding(stale_delete)) == grpc.StatusCode.ABORTED


async def test_changing_the_home_region_is_invalid_argument(control: Instance) -> None:
    await control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    patch = resources_pb2.Building(building_id="hq", home_region=common_pb2.REGION_EU_WEST)
    assert await _code(control.stub.UpdateBuilding(ctl.UpdateBuildingRequest(building=patch))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_updating_a_missing_building_is_not_found(control: Instance) -> None:
    patch = resources_pb2.Building(building_id="nowhere", display_name="x")
    assert await _code(control.stub.UpdateBuilding(ctl.UpdateBuildingRequest(building=patch))) == (
        grpc.StatusCode.NOT_FOUND
    )


async def test_a_safe_band_that_no_longer_encloses_comfort_is_refused(control: Instance) -> None:
    await control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    await control.stub.CreateZone(ctl.CreateZoneRequest(zone=zone()))
    patch = resources_pb2.Zone(
        building_id="hq", zone_id="z1", safe_band=resources_pb2.SafeBand(min_c=18, max_c=26)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await control.stub.UpdateZone(
            ctl.UpdateZoneRequest(
                zone=patch, update_mask=field_mask_pb2.FieldMask(paths=["safe_band"])
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ["zone.safe_band"]
    read = await control.stub.GetZone(ctl.GetZoneRequest(building_id="hq", zone_id="z1"))
    assert read.zone.safe_band.min_c == 5


async def test_a_zone_needs_its_building_and_a_unique_id(control: Instance) -> None:
    orphan = ctl.CreateZoneRequest(zone=zone(building_id="nowhere"))
    assert await _code(control.stub.CreateZone(orphan)) == grpc.StatusCode.NOT_FOUND
    await control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    await control.stub.CreateZone(ctl.CreateZoneRequest(zone=zone()))
    twice = control.stub.CreateZone(ctl.CreateZoneRequest(zone=zone()))
    assert await _code(twice) == grpc.StatusCode.ALREADY_EXISTS


async def test_deletes_respect_what_depends_on_them(control: Instance) -> None:
    await control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    await control.stub.CreateZone(ctl.CreateZoneRequest(zone=zone()))
    await control.stub.RegisterDevice(ctl.RegisterDeviceRequest(device=device()))
    delete_building = ctl.DeleteBuildingRequest(building_id="hq")
    delete_zone = ctl.DeleteZoneRequest(building_id="hq", zone_id="z1")
    delete_device = ctl.DeleteDeviceRequest(building_id="hq", device_id="gw1")
    assert await _code(control.stub.DeleteBuilding(delete_building)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert await _code(control.stub.DeleteZone(delete_zone)) == grpc.StatusCode.FAILED_PRECONDITION
    await control.stub.DeleteDevice(delete_device)
    assert await _code(control.stub.DeleteDevice(delete_device)) == grpc.StatusCode.NOT_FOUND
    await control.stub.DeleteZone(delete_zone)
    await control.stub.DeleteBuilding(delete_building)
    assert await _code(control.stub.DeleteBuilding(delete_building)) == grpc.StatusCode.NOT_FOUND


async def test_a_zone_is_commanded_by_one_device_but_sensed_by_many(control: Instance) -> None:
    await control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    await control.stub.CreateZone(ctl.CreateZoneRequest(zone=zone()))
    await control.stub.RegisterDevice(ctl.RegisterDeviceRequest(device=device()))
    rival = ctl.RegisterDeviceRequest(device=device(device_id="gw2"))
    assert await _code(control.stub.RegisterDevice(rival)) == grpc.StatusCode.FAILED_PRECONDITION
    sensor = device(device_id="s1", kind=resources_pb2.DEVICE_KIND_SENSOR)
    registered = await control.stub.RegisterDevice(ctl.RegisterDeviceRequest(device=sensor))
    assert registered.device.connection_state == resources_pb2.CONNECTION_STATE_NEVER_CONNECTED
    unknown_zone = ctl.RegisterDeviceRequest(device=device(device_id="gw3", zone_ids=("zz",)))
    assert await _code(control.stub.RegisterDevice(unknown_zone)) == grpc.StatusCode.NOT_FOUND


async def test_reregistering_a_device_replaces_its_zones(control: Instance) -> None:
    await control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    for zone_id in ("z1", "z2"):
        await control.stub.CreateZone(ctl.CreateZoneRequest(zone=zone(zone_id=zone_id)))
    await control.stub.RegisterDevice(ctl.RegisterDeviceRequest(device=device()))
    moved = await control.stub.RegisterDevice(
        ctl.RegisterDeviceRequest(device=device(zone_ids=("z2",)))
    )
    assert list(moved.device.zone_ids) == ["z2"]
    await control.stub.DeleteZone(ctl.DeleteZoneRequest(building_id="hq", zone_id="z1"))


async def test_lists_page_in_order_and_refuse_a_foreign_token(control: Instance) -> None:
    for name in ("c", "a", "d", "b", "e"):
        await control.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building(name)))
    seen: list[str] = []
    token = ""
    while True:
        page = await control.stub.ListBuildings(
            ctl.ListBuildingsRequest(page_size=2, page_token=token)
        )
        seen += [b.building_id for b in page.buildings]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["a", "b", "c", "d", "e"]
    first = await control.stub.ListBuildings(ctl.ListBuildingsRequest(page_size=2))
    foreign = ctl.ListBuildingsRequest(
        page_token=first.next_page_token, home_region=common_pb2.REGION_EU_WEST
    )
    assert await _code(control.stub.ListBuildings(foreign)) == grpc.StatusCode.INVALID_ARGUMENT
    garbage = ctl.ListBuildingsRequest(page_token="not-a-token")
    assert await _code(control.stub.ListBuildings(garbage)) == grpc.StatusCode.INVALID_ARGUMENT
