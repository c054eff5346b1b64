"""A virtual BMS gateway: a simulated building's device speaking `Connect` to the control service.

`EdgeGateway` needs only a channel to control — `open_channel(address, credentials, authority)`
makes one: plaintext to a service on loopback in tests, or mutual TLS with the device's
certificate to an Envoy ingress in the mesh. It says Hello, streams the building's telemetry
(each sample acknowledged before `send` returns, so control has stored it), acknowledges every
setpoint command as a device must (APPLIED, or REJECTED "expired" once its window has ended), and
keeps the newest command per zone for `sim.loop.ClosedLoop` to run.

Times are the simulation's: a command's window is judged against the observation time the
gateway last sent, as a device judges it against its own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import control_service_pb2_grpc as ctl_grpc
from hvac.control.v1 import resources_pb2

from sim.building import Observation
from sim.loop import DeviceCommand


def open_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None = None,
    authority: str | None = None,
) -> grpc.aio.Channel:
    """A channel to control: plaintext without `credentials`; `authority` picks control's
    virtual host behind Envoy (``control.hvac.local``)."""
    options = [("grpc.default_authority", authority)] if authority else []
    if credentials is None:
        return grpc.aio.insecure_channel(address, options)
    return grpc.aio.secure_channel(address, credentials, options)


def reading_of(zone: Observation, index: int) -> resources_pb2.ZoneReading:
    """The reading of zone `index` of an observation, as a device reports it."""
    seen = zone.zones[index]
    return resources_pb2.ZoneReading(
        zone_id=seen.zone_id,
        temperature_c=seen.temperature_c,
        occupancy=(
            resources_pb2.OCCUPANCY_OCCUPIED
            if seen.occupied
            else resources_pb2.OCCUPANCY_UNOCCUPIED
        ),
        power_kw=seen.power_kw,
        power_stage=seen.power_stage,
    )


class EdgeGateway:
    """One device serving every zone of a simulated building (see the module docstring)."""

    def __init__(self, channel: grpc.aio.Channel, building_id: str, device_id: str) -> None:
        self.stub = ctl_grpc.ControlServiceStub(channel)
        self.building_id = building_id
        self.device_id = device_id
        self.commands: dict[str, resources_pb2.SetpointCommand] = {}
        self.received: list[resources_pb2.SetpointCommand] = []
        self.rejected: list[ctl.TelemetryAck] = []
        self._sequence = 0
        self._last_applied = 0
        self._now = datetime.fromtimestamp(0, UTC)
        self._call: grpc.aio.StreamStreamCall[bytes, ctl.ConnectResponse] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._acks: dict[int, asyncio.Future[ctl.TelemetryAck]] = {}
        self._arrived = asyncio.Condition()

    async def connect(self) -> ctl.Welcome:
        """Open the session (resuming after the last applied command); returns the Welcome."""
        self._call = self.stub.Connect()
        hello = ctl.Hello(
            building_id=self.building_id,
            device_id=self.device_id,
            last_applied_sequence=self._last_applied,
            firmware_version="sim-1",
        )
        await self._call.write(ctl.ConnectRequest(hello=hello))
        first = await self._call.read()
        if not isinstance(first, ctl.ConnectResponse) or not first.HasField("welcome"):
            raise RuntimeError(f"expected a Welcome, got {first!r}")
        self._sequence = max(self._sequence, first.welcome.last_telemetry_sequence)
        self._reader = asyncio.create_task(self._read())
        return first.welcome

    async def close(self) -> None:
        """End the session."""
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await self._reader
        self._call = self._reader = None

    async def send(self, observations: Sequence[Observation]) -> None:
        """Stream `observations` in order; returns once control acknowledged each. Samples it
        refuses are kept in `rejected`."""
        futures = []
        for observation in observations:
            self._sequence += 1
            self._now = max(self._now, observation.time)
            sample = ctl.Telemetry(
                sequence=self._sequence,
                readings=[reading_of(observation, i) for i in range(len(observation.zones))],
                outdoor_temperature_c=observation.outdoor_temperature_c,
            )
            sample.sample_time.FromDatetime(observation.time.astimezone(UTC))
            future: asyncio.Future[ctl.TelemetryAck] = asyncio.get_running_loop().create_future()
            self._acks[self._sequence] = future
            futures.append(future)
            await self._write(ctl.ConnectRequest(telemetry=sample))
        for ack in await asyncio.gather(*futures):
            if ack.status.code != 0:
                self.rejected.append(ack)

    async def wait_for_commands(self, zone_ids: Sequence[str], valid_at: datetime) -> None:
        """Wait until every zone of `zone_ids` has a command valid at `valid_at`."""

        def ready() -> bool:
            return all(
                z in self.commands
                and self.commands[z].valid_from_time.ToDatetime(UTC) <= valid_at
                and self.commands[z].valid_until_time.ToDatetime(UTC) > valid_at
                for z in zone_ids
            )

        async with self._arrived:
            await self._arrived.wait_for(ready)

    def device_commands(self, zone_ids: Sequence[str]) -> list[DeviceCommand]:
        """What each zone runs now: its newest command, or idle within the widest setpoints
        before the first one (the device's own thermostat then guards the zone)."""
        found = []
        for zone_id in zone_ids:
            command = self.commands.get(zone_id)
            if command is None:
                found.append(DeviceCommand(0, 16.0, 28.0))
            else:
                found.append(
                    DeviceCommand(
                        command.power_stage, command.heating_setpoint_c, command.cooling_setpoint_c
                    )
                )
        return found

    async def _write(self, request: ctl.ConnectRequest) -> None:
        assert self._call is not None
        async with self._write_lock:
            await self._call.write(request)

    async def _read(self) -> None:
        assert self._call is not None
        while True:
            message = await self._call.read()
            if message is grpc.aio.EOF:
                return
            assert isinstance(message, ctl.ConnectResponse)
            kind = message.WhichOneof("payload")
            if kind == "telemetry_ack":
                future = self._acks.pop(message.telemetry_ack.sequence, None)
                if future is not None and not future.done():
                    future.set_result(message.telemetry_ack)
            elif kind == "setpoint_command":
                await self._apply(message.setpoint_command)

    async def _apply(self, command: resources_pb2.SetpointCommand) -> None:
        self.received.append(command)
        expired = command.valid_until_time.ToDatetime(UTC) <= self._now
        ack = ctl.CommandAck(
            sequence=command.sequence,
            outcome=(
                resources_pb2.COMMAND_OUTCOME_REJECTED
                if expired
                else resources_pb2.COMMAND_OUTCOME_APPLIED
            ),
            reason="expired" if expired else "",
        )
        if not expired:
            current = self.commands.get(command.zone_id)
            if current is None or current.valid_from_time.ToDatetime(
                UTC
            ) <= command.valid_from_time.ToDatetime(UTC):
                self.commands[command.zone_id] = command
        await self._write(ctl.ConnectRequest(command_ack=ack))
        self._last_applied = command.sequence
        async with self._arrived:
            self._arrived.notify_all()
