"""Resources and a scripted edge device for the control service tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2
from hvac.common.v1 import common_pb2
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import control_service_pb2_grpc as ctl_grpc
from hvac.control.v1 import resources_pb2

from svc_control.registry import NewCommand

# ------------------------------------------------------------------------------ resources


def building(building_id: str = "hq", **fields: Any) -> resources_pb2.Building:
    base = resources_pb2.Building(
        building_id=building_id,
        display_name="Head office",
        home_region=common_pb2.REGION_US_EAST,
        floor_area_m2=1200.0,
        time_zone="Europe/Paris",
        tariff=resources_pb2.Tariff(currency_code="EUR", default_price_per_kwh=0.2),
    )
    base.MergeFrom(resources_pb2.Building(**fields))
    return base


def zone(building_id: str = "hq", zone_id: str = "z1", **fields: Any) -> resources_pb2.Zone:
    base = resources_pb2.Zone(
        building_id=building_id,
        zone_id=zone_id,
        floor_area_m2=100.0,
        comfort=resources_pb2.ComfortSchedule(
            occupied=common_pb2.ComfortBand(lower_c=21, upper_c=24),
            unoccupied=common_pb2.ComfortBand(lower_c=15, upper_c=30),
        ),
        safe_band=resources_pb2.SafeBand(min_c=5, max_c=35),
        equipment=resources_pb2.Equipment(
            kind=resources_pb2.EQUIPMENT_KIND_HEATING,
            power_stages_kw=[0.0, 1.5, 3.0],
            min_on_duration=duration_pb2.Duration(seconds=180),
        ),
    )
    base.MergeFrom(resources_pb2.Zone(**fields))
    return base


def device(
    building_id: str = "hq",
    device_id: str = "gw1",
    zone_ids: tuple[str, ...] = ("z1",),
    kind: resources_pb2.DeviceKind.ValueType = resources_pb2.DEVICE_KIND_BMS_GATEWAY,
) -> resources_pb2.Device:
    return resources_pb2.Device(
        building_id=building_id, device_id=device_id, kind=kind, zone_ids=list(zone_ids)
    )


async def registered(
    stub: ctl_grpc.ControlServiceStub,
    zones: tuple[str, ...] = ("z1",),
    devices: dict[str, tuple[str, ...]] | None = None,
) -> None:
    """Building ``hq`` with ``zones`` and devices (``gw1`` serving every zone by default)."""
    await stub.CreateBuilding(ctl.CreateBuildingRequest(building=building()))
    for zone_id in zones:
        await stub.CreateZone(ctl.CreateZoneRequest(zone=zone(zone_id=zone_id)))
    for device_id, served in (devices or {"gw1": zones}).items():
        await stub.RegisterDevice(
            ctl.RegisterDeviceRequest(device=device(device_id=device_id, zone_ids=served))
        )


def commands(*zones: str, stage: int = 1) -> list[NewCommand]:
    start = datetime.now(UTC)
    return [
        NewCommand(
            zone_id=zone_id,
            heating_setpoint_c=21.0,
            cooling_setpoint_c=24.0,
            power_stage=stage,
            power_kw=1.5 * stage,
            valid_from_time=start,
            valid_until_time=start + timedelta(minutes=15),
            source=resources_pb2.COMMAND_SOURCE_PLAN,
            plan_id="plan-1",
        )
        for zone_id in zones
    ]


# ------------------------------------------------------------------------------ edge device


def reading(zone_id: str = "z1", temperature_c: float = 21.0, **fields: Any) -> Any:
    return resources_pb2.ZoneReading(zone_id=zone_id, temperature_c=temperature_c, **fields)


def telemetry(sequence: int, *readings: Any, **fields: Any) -> ctl.Telemetry:
    sample = ctl.Telemetry(sequence=sequence, readings=list(readings) or [reading()], **fields)
    sample.sample_time.FromDatetime(datetime.now(UTC) - timedelta(seconds=1))
    return sample


class EdgeDevice:
    """A device speaking `Connect` step by step, as the tests script it."""

    def __init__(
        self, stub: ctl_grpc.ControlServiceStub, device_id: str = "gw1", building_id: str = "hq"
    ) -> None:
        self.stub = stub
        self.device_id = device_id
        self.building_id = building_id
        self.call: Any = None

    def open(self) -> Any:
        self.call = self.stub.Connect()
        return self.call

    async def hello(self, last_applied_sequence: int = 0) -> ctl.Welcome:
        self.open()
        await self.call.write(
            ctl.ConnectRequest(
                hello=ctl.Hello(
                    building_id=self.building_id,
                    device_id=self.device_id,
                    last_applied_sequence=last_applied_sequence,
                    firmware_version="2.4.1",
                )
            )
        )
        first = await self.call.read()
        assert first.WhichOneof("payload") == "welcome", first
        welcome: ctl.Welcome = first.welcome
        return welcome

    async def send(self, **payload: Any) -> None:
        await self.call.write(ctl.ConnectRequest(**payload))

    async def next(self) -> ctl.ConnectResponse:
        """The next message that is not a heartbeat."""
        while True:
            message: ctl.ConnectResponse = await self.call.read()
            if message.WhichOneof("payload") != "heartbeat":
                return message

    async def telemetry_ack(self, sample: ctl.Telemetry) -> ctl.TelemetryAck:
        await self.send(telemetry=sample)
        message = await self.next()
        assert message.WhichOneof("payload") == "telemetry_ack", message
        return message.telemetry_ack

    async def commands(self, count: int) -> list[resources_pb2.SetpointCommand]:
        found = []
        for _ in range(count):
            message = await self.next()
            assert message.WhichOneof("payload") == "setpoint_command", message
            found.append(message.setpoint_command)
        return found

    async def ack(self, sequence: int) -> None:
        await self.send(
            command_ack=ctl.CommandAck(
                sequence=sequence, outcome=resources_pb2.COMMAND_OUTCOME_APPLIED
            )
        )

    async def heartbeats_only(self, count: int = 3) -> None:
        """Assert that nothing but heartbeats arrives for ``count`` heartbeats."""
        for _ in range(count):
            message = await self.call.read()
            assert message.WhichOneof("payload") == "heartbeat", message

    async def error(self) -> grpc.aio.AioRpcError:
        """Read until the stream ends with an error, and return it."""
        try:
            while True:
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    raise AssertionError("the stream ended without an error")
        except grpc.aio.AioRpcError as error:
            return error

    async def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
            self.call = None
