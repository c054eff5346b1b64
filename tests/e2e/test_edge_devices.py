"""Virtual edge devices in the running mesh: a simulated building's device connects to control
through the us-east Envoy ingress with its own device certificate, exactly as a real device would.

The registry entries and the override are made through the gateway's egress (Envoy, with the
gateway's service identity): the path the design's RBAC allows for registry calls, since users
may only call the gateway and devices only `Connect`. That a device certificate can call nothing
but `Connect` is shown in ``test_mesh.py``
(``test_a_device_may_open_a_control_session_but_call_nothing_else``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from hvac.common.v1 import common_pb2
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import control_service_pb2_grpc as ctl_grpc
from hvac.control.v1 import resources_pb2

from meshctl.pki import device_id
from meshctl.status import ClientIdentity
from meshctl.up import Mesh
from sim.building import BuildingSimulator, Observation
from sim.devices import registration
from sim.edge import EdgeGateway, open_channel
from sim.loop import ClosedLoop, DeviceCommand
from sim.offices import five_zone_office
from sim.prices import time_of_use
from sim.weather import SyntheticWeather
from tests.e2e.e2e_helpers import egress_channel, ingress

BUILDING = "edge-office"
DEVICE = "bms"
OTHER_DEVICE = "sensor-1"
CONTROL_AUTHORITY = "control.hvac.local"
SPEC = five_zone_office()
ZONES = [z.zone_id for z in SPEC.zones]
GUARD_S = 60.0  # hang guard for a round trip through the mesh, never a speed assertion


@pytest.fixture(scope="module")
def registered(mesh: Mesh) -> str:
    """The office, its zones, its BMS gateway and a sensor in control's registry (home region
    us-east, where the devices connect); returns the building id."""
    building, zones = registration(SPEC, BUILDING, time_of_use())
    building.home_region = common_pb2.REGION_US_EAST
    with egress_channel(mesh, "gateway", "control") as channel:
        stub = ctl_grpc.ControlServiceStub(channel)
        stub.CreateBuilding(ctl.CreateBuildingRequest(building=building), timeout=GUARD_S)
        for zone in zones:
            stub.CreateZone(ctl.CreateZoneRequest(zone=zone), timeout=GUARD_S)
        devices = (
            (DEVICE, resources_pb2.DEVICE_KIND_BMS_GATEWAY, ZONES),
            (OTHER_DEVICE, resources_pb2.DEVICE_KIND_SENSOR, ZONES[:1]),
        )
        for name, kind, served in devices:
            device = resources_pb2.Device(
                building_id=BUILDING, device_id=name, kind=kind, zone_ids=served
            )
            stub.RegisterDevice(ctl.RegisterDeviceRequest(device=device), timeout=GUARD_S)
    return BUILDING


def device_credentials(mesh: Mesh, building: str, device: str) -> grpc.ChannelCredentials:
    """The mesh CA's certificate for ``building/device``, as installed on the device."""
    paths = mesh.pki.issue(f"device.{building}.{device}", device_id(building, device))
    return ClientIdentity(mesh.pki.ca_cert, paths.cert, paths.key).credentials()


def through_ingress(mesh: Mesh, credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
    return open_channel(ingress(mesh, "us-east"), credentials, CONTROL_AUTHORITY)


def registry_channel(mesh: Mesh) -> grpc.aio.Channel:
    """The gateway's egress to control (plaintext to the local Envoy, mTLS beyond)."""
    return open_channel(
        f"127.0.0.1:{mesh.ports['us-east'].egress['gateway']}", None, CONTROL_AUTHORITY
    )


def recent_telemetry(minutes: int) -> list[Observation]:
    """A minute-by-minute stretch of the office's telemetry ending a minute ago, idle."""
    start = datetime.now(UTC) - timedelta(minutes=minutes + 1)
    weather = SyntheticWeather(SPEC.time_zone, seed=5)
    building = ClosedLoop(BuildingSimulator(SPEC, weather, start, 19.0, 0.05, 5), time_of_use())
    streamed = [building.observe()]
    idle = [DeviceCommand(0, 16.0, 28.0) for _ in ZONES]
    building.advance(idle, minutes * 60.0, streamed.append)
    return streamed


async def test_a_device_with_its_certificate_streams_telemetry_and_gets_commands_via_envoy(
    mesh: Mesh, registered: str
) -> None:
    async with (
        through_ingress(mesh, device_credentials(mesh, registered, DEVICE)) as channel,
        registry_channel(mesh) as admin_channel,
    ):
        registry = ctl_grpc.ControlServiceStub(admin_channel)
        gateway = EdgeGateway(channel, registered, DEVICE)
        welcome = await asyncio.wait_for(gateway.connect(), GUARD_S)
        try:
            assert welcome.region == common_pb2.REGION_US_EAST
            observations = recent_telemetry(minutes=4)
            await asyncio.wait_for(gateway.send(observations), GUARD_S)
            assert gateway.rejected == []  # every sample acknowledged OK

            state = (
                await registry.GetBuildingState(
                    ctl.GetBuildingStateRequest(building_id=registered), timeout=GUARD_S
                )
            ).state
            last = observations[-1]
            stored = {z.zone_id: z for z in state.zones}
            for seen in last.zones:
                assert stored[seen.zone_id].latest_reading.temperature_c == pytest.approx(
                    seen.temperature_c
                )
                assert stored[seen.zone_id].reading_time.ToDatetime(UTC) == last.time
            assert state.connected_devices == 1

            # An operator's setpoint for the first zone: the loop decides the building's interval
            # at once and every zone's command reaches the device through Envoy.
            held = resources_pb2.Override(
                building_id=registered,
                zone_id=ZONES[0],
                kind=resources_pb2.OVERRIDE_KIND_SETPOINT,
                heating_setpoint_c=21.0,
                cooling_setpoint_c=24.5,
                ttl=Duration(seconds=1800),
                reason="edge device test",
            )
            created = await registry.CreateOverride(
                ctl.CreateOverrideRequest(override=held), timeout=GUARD_S
            )
            valid_at = datetime.now(UTC)
            await asyncio.wait_for(gateway.wait_for_commands(ZONES, valid_at), GUARD_S)
            after = (
                await registry.GetBuildingState(
                    ctl.GetBuildingStateRequest(building_id=registered), timeout=GUARD_S
                )
            ).state
        finally:
            await gateway.close()

    command = gateway.commands[ZONES[0]]
    assert (command.heating_setpoint_c, command.cooling_setpoint_c) == (21.0, 24.5)
    assert command.override_id == created.override.override_id
    # The other zones run the interval's plan, which the control loop decided and stored.
    assert after.last_plan.plan_id
    assert {gateway.commands[z].plan_id for z in ZONES[1:]} == {after.last_plan.plan_id}
    assert {c.zone_id for c in gateway.received} == set(ZONES)


async def test_a_certificate_of_another_device_cannot_open_this_devices_session(
    mesh: Mesh, registered: str
) -> None:
    credentials = device_credentials(mesh, registered, OTHER_DEVICE)
    async with through_ingress(mesh, credentials) as channel:
        impostor = EdgeGateway(channel, registered, DEVICE)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(impostor.connect(), GUARD_S)
        await impostor.close()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Refused by control, which compared Envoy's vouched identity with Hello (not Envoy RBAC).
    assert device_id(registered, OTHER_DEVICE) in (refused.value.details() or "")
