"""Operator overrides with expiry, and the live state of a building."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2
from hvac.common.v1 import common_pb2
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import resources_pb2

from tests.integration.control.conftest import Instance, InstanceFactory
from tests.integration.control.resources import EdgeDevice, commands, registered

pytestmark = pytest.mark.integration

HOUR = duration_pb2.Duration(seconds=3600)


@pytest.fixture
async def site(instance_factory: InstanceFactory) -> AsyncIterator[Instance]:
    async with instance_factory(heartbeat_interval_s=0.2, region="eu-west") as instance:
        await registered(instance.stub, zones=("z1", "z2"))
        yield instance


def override(zone_id: str = "", **fields: object) -> resources_pb2.Override:
    base = resources_pb2.Override(
        building_id="hq",
        zone_id=zone_id,
        kind=resources_pb2.OVERRIDE_KIND_HOLD,
        reason="tenant event",
        ttl=HOUR,
    )
    base.MergeFrom(resources_pb2.Override(**fields))  # type: ignore[arg-type]
    return base


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


async def test_an_override_gets_an_id_an_expiry_and_is_active(site: Instance) -> None:
    created = (
        await site.stub.CreateOverride(ctl.CreateOverrideRequest(override=override()))
    ).override
    uuid.UUID(created.override_id)
    assert created.state == resources_pb2.OVERRIDE_STATE_ACTIVE
    assert created.expire_time.ToSeconds() - created.create_time.ToSeconds() == 3600
    assert not created.HasField("ttl")


async def test_create_override_is_idempotent_by_request_id(site: Instance) -> None:
    request = ctl.CreateOverrideRequest(override=override("z1"), request_id=str(uuid.uuid4()))
    first = await site.stub.CreateOverride(request)
    assert await site.stub.CreateOverride(request) == first
    listed = await site.stub.ListOverrides(ctl.ListOverridesRequest(building_id="hq"))
    assert [o.override_id for o in listed.overrides] == [first.override.override_id]
    request.override.reason = "another reason"
    assert await _code(site.stub.CreateOverride(request)) == grpc.StatusCode.FAILED_PRECONDITION


async def test_setpoints_outside_a_covered_safe_band_are_failed_precondition(
    site: Instance,
) -> None:
    hot = override(
        kind=resources_pb2.OVERRIDE_KIND_SETPOINT, heating_setpoint_c=33, cooling_setpoint_c=40
    )
    assert await _code(site.stub.CreateOverride(ctl.CreateOverrideRequest(override=hot))) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    missing = override("nowhere")
    assert await _code(site.stub.CreateOverride(ctl.CreateOverrideRequest(override=missing))) == (
        grpc.StatusCode.NOT_FOUND
    )
    listed = await site.stub.ListOverrides(ctl.ListOverridesRequest(building_id="hq"))
    assert list(listed.overrides) == []


async def test_overrides_list_newest_first_filtered_and_paged(site: Instance) -> None:
    made = []
    for zone_id in ("z1", "", "z1", "z2"):
        reply = await site.stub.CreateOverride(
            ctl.CreateOverrideRequest(override=override(zone_id))
        )
        made.append(reply.override.override_id)
    seen, token = [], ""
    while True:
        page = await site.stub.ListOverrides(
            ctl.ListOverridesRequest(building_id="hq", page_size=3, page_token=token)
        )
        seen += [o.override_id for o in page.overrides]
        token = page.next_page_token
        if not token:
            break
    assert seen == made[::-1]
    z1 = await site.stub.ListOverrides(ctl.ListOverridesRequest(building_id="hq", zone_id="z1"))
    assert [o.override_id for o in z1.overrides] == [made[2], made[0]]


async def test_cancel_is_idempotent_and_an_expired_override_cannot_be_cancelled(
    site: Instance, pg: asyncpg.Connection
) -> None:
    first = (
        await site.stub.CreateOverride(ctl.CreateOverrideRequest(override=override()))
    ).override
    cancel = ctl.CancelOverrideRequest(building_id="hq", override_id=first.override_id)
    cancelled = (await site.stub.CancelOverride(cancel)).override
    assert cancelled.state == resources_pb2.OVERRIDE_STATE_CANCELLED
    assert (await site.stub.CancelOverride(cancel)).override == cancelled
    second = (
        await site.stub.CreateOverride(ctl.CreateOverrideRequest(override=override()))
    ).override
    # Let an hour pass for this override only.
    await pg.execute(
        "UPDATE control.overrides SET expire_time = now() - interval '1 second',"
        " create_time = create_time - interval '1 hour' WHERE override_id = $1",
        uuid.UUID(second.override_id),
    )
    late = ctl.CancelOverrideRequest(building_id="hq", override_id=second.override_id)
    assert await _code(site.stub.CancelOverride(late)) == grpc.StatusCode.FAILED_PRECONDITION
    expired = await site.stub.ListOverrides(
        ctl.ListOverridesRequest(building_id="hq", state=resources_pb2.OVERRIDE_STATE_EXPIRED)
    )
    assert [o.override_id for o in expired.overrides] == [second.override_id]
    unknown = ctl.CancelOverrideRequest(building_id="hq", override_id=str(uuid.uuid4()))
    assert await _code(site.stub.CancelOverride(unknown)) == grpc.StatusCode.NOT_FOUND


async def test_deleting_a_zone_cancels_the_overrides_naming_it(site: Instance) -> None:
    await site.stub.RegisterDevice(
        ctl.RegisterDeviceRequest(
            device=resources_pb2.Device(
                building_id="hq",
                device_id="gw1",
                kind=resources_pb2.DEVICE_KIND_BMS_GATEWAY,
                zone_ids=["z1"],
            )
        )
    )
    made = (
        await site.stub.CreateOverride(ctl.CreateOverrideRequest(override=override("z2")))
    ).override
    await site.stub.DeleteZone(ctl.DeleteZoneRequest(building_id="hq", zone_id="z2"))
    listed = await site.stub.ListOverrides(ctl.ListOverridesRequest(building_id="hq"))
    assert [(o.override_id, o.state) for o in listed.overrides] == [
        (made.override_id, resources_pb2.OVERRIDE_STATE_CANCELLED)
    ]


async def test_building_state_shows_commands_overrides_and_connections(site: Instance) -> None:
    device = EdgeDevice(site.stub)
    await device.hello()
    await site.servicer.hub.issue_commands("hq", commands("z1"))
    await device.commands(1)
    zone_hold = (
        await site.stub.CreateOverride(ctl.CreateOverrideRequest(override=override("z2")))
    ).override
    emergency = override(kind=resources_pb2.OVERRIDE_KIND_EMERGENCY)
    building_wide = (
        await site.stub.CreateOverride(ctl.CreateOverrideRequest(override=emergency))
    ).override
    state = (await site.stub.GetBuildingState(ctl.GetBuildingStateRequest(building_id="hq"))).state
    assert state.mode == resources_pb2.CONTROL_MODE_EMERGENCY
    assert state.serving_region == common_pb2.REGION_EU_WEST
    assert state.connected_devices == 1
    assert [o.override_id for o in state.active_overrides] == [
        building_wide.override_id,
        zone_hold.override_id,
    ]
    z1, z2 = state.zones
    assert z1.current_command.sequence == 1
    assert not z2.HasField("current_command")
    assert z1.override_id == z2.override_id == building_wide.override_id  # EMERGENCY wins
    assert z1.occupancy == resources_pb2.OCCUPANCY_UNOCCUPIED  # no schedule, nothing sensed
    await device.close()


async def test_building_state_of_an_unknown_building_is_not_found(site: Instance) -> None:
    request = ctl.GetBuildingStateRequest(building_id="nowhere")
    assert await _code(site.stub.GetBuildingState(request)) == grpc.StatusCode.NOT_FOUND


async def test_the_control_loop_hears_of_each_override_change(site: Instance) -> None:
    heard: list[str] = []

    async def record(building_id: str) -> None:
        heard.append(building_id)

    site.servicer.on_overrides_changed = record
    made = (await site.stub.CreateOverride(ctl.CreateOverrideRequest(override=override()))).override
    cancel = ctl.CancelOverrideRequest(building_id="hq", override_id=made.override_id)
    await site.stub.CancelOverride(cancel)
    assert heard == ["hq", "hq"]


async def test_request_ids_older_than_a_day_are_forgotten(
    site: Instance, pg: asyncpg.Connection
) -> None:
    old_id = uuid.uuid4()
    await pg.execute(
        "INSERT INTO control.request_ids (request_id, method, request_sha256, response,"
        " create_time) VALUES ($1, 'CreateOverride', '', '', now() - interval '25 hours')",
        old_id,
    )
    request = ctl.CreateOverrideRequest(override=override(), request_id=str(uuid.uuid4()))
    await site.stub.CreateOverride(request)
    remaining = await pg.fetch("SELECT request_id FROM control.request_ids")
    assert [r["request_id"] for r in remaining] == [uuid.UUID(request.request_id)]


async def test_concurrent_retries_with_one_request_id_create_one_override(site: Instance) -> None:
    request = ctl.CreateOverrideRequest(override=override("z1"), request_id=str(uuid.uuid4()))
    answers = await asyncio.gather(*(site.stub.CreateOverride(request) for _ in range(4)))
    assert len({a.override.override_id for a in answers}) == 1
    listed = await site.stub.ListOverrides(ctl.ListOverridesRequest(building_id="hq"))
    assert len(listed.overrides) == 1
