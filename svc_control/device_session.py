"""One device's `Connect` session: reading telemetry and acks, pushing commands and heartbeats.

Created and routed by :class:`~svc_control.sessions.SessionHub`, which owns the durable state;
what lives here is per-connection (the next sequence to send, timers for heartbeats and silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from hvac.control.v1 import control_service_pb2 as ctl

from meshkit.errors import FieldViolation
from meshkit.validation import violations
from svc_control.registry import ControlError, ErrorKind

if TYPE_CHECKING:
    from svc_control.sessions import SessionHub

log = logging.getLogger("svc_control.sessions")
_BATCH = 256  # commands read per query while catching up


@dataclass(eq=False)
class DeviceSession:
    hub: SessionHub
    building_id: str
    device_id: str
    session_id: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    zones_changed: bool = False
    next_sequence: int = 1  # next command to send in this session
    highest_sent: int = 0
    last_acknowledged: int = 0
    zone_stages: dict[str, int] = field(default_factory=dict)
    building_zones: frozenset[str] = frozenset()
    last_received: datetime | None = None
    # Responses to send; a ControlError ends the session with its status, None ends it normally.
    _outbox: asyncio.Queue[ctl.ConnectResponse | ControlError | None] = field(
        default_factory=asyncio.Queue
    )
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _ended: bool = False

    def begin(self, resume_from: int, stages: dict[str, int], zones: frozenset[str]) -> None:
        self.next_sequence = resume_from
        self.last_acknowledged = resume_from - 1
        self.highest_sent = resume_from - 1
        self.zone_stages, self.building_zones = stages, zones
        self.last_received = self.hub.now()

    def end(self, error: ControlError | None) -> None:
        """End the session with ``error``, or normally with ``None`` (from any task); the first
        reason wins."""
        if not self._ended:
            self._ended = True
            self._outbox.put_nowait(error)

    async def run(self, requests: AsyncIterator[bytes]) -> AsyncIterator[ctl.ConnectResponse]:
        self._tasks = [
            asyncio.create_task(self._guard(self._read(requests))),
            asyncio.create_task(self._guard(self._push())),
        ]
        heartbeat_s = self.hub.settings.heartbeat_interval.total_seconds()
        while True:
            try:
                async with asyncio.timeout(heartbeat_s):  # wait_for may swallow a cancel (3.11)
                    item = await self._outbox.get()
            except TimeoutError:
                beat = ctl.Heartbeat()
                beat.send_time.FromDatetime(self.hub.now())
                yield ctl.ConnectResponse(heartbeat=beat)
                continue
            if item is None:
                return  # the device closed its side
            if isinstance(item, ControlError):
                raise item
            yield item

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.hub.store.close_session(
                self.building_id, self.device_id, self.session_id, self.last_received
            )

    async def _guard(self, work: Awaitable[None]) -> None:
        try:
            await work
        except ControlError as error:
            self.end(error)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("device session failed", extra={"device": self.device_id})
            self.end(ControlError(ErrorKind.UNAVAILABLE, "internal error; reconnect with backoff"))

    # ---------------------------------------------------------------- device -> service

    async def _read(self, requests: AsyncIterator[bytes]) -> None:
        while True:
            request = await next_request(requests)
            if request is None:
                self.end(None)
                return
            self.last_received = self.hub.now()
            kind = request.WhichOneof("payload")
            if kind == "hello":
                raise ControlError(ErrorKind.FAILED_PRECONDITION, "Hello may be sent only once")
            if kind == "telemetry":
                ack = await self._telemetry(request)
                self._outbox.put_nowait(ctl.ConnectResponse(telemetry_ack=ack))
            else:
                check_whole(request)
                await self._acknowledge(request.command_ack)

    async def _telemetry(self, request: ctl.ConnectRequest) -> ctl.TelemetryAck:
        sample = request.telemetry
        broken = violations(request)
        if any(v.field.startswith("telemetry.sequence") for v in broken):
            raise _invalid(broken, "telemetry has no valid sequence, so it cannot be acknowledged")
        if self.zones_changed:
            await self._reload_zones()
        ack = ctl.TelemetryAck(sequence=sample.sequence)
        if broken:
            ack.status.CopyFrom(_rpc_status(code_pb2.INVALID_ARGUMENT, broken))
            return ack
        zone_problems = self._zone_problems(sample)
        if zone_problems:  # the registry may have changed before its notification arrived
            await self._reload_zones()
            zone_problems = self._zone_problems(sample)
        if zone_problems:
            reasons = {v.reason for v in zone_problems}
            code = (
                code_pb2.NOT_FOUND
                if "zone.unknown" in reasons
                else code_pb2.PERMISSION_DENIED
                if "zone.not_served" in reasons
                else code_pb2.INVALID_ARGUMENT
            )
            ack.status.CopyFrom(_rpc_status(code, zone_problems))
            return ack
        stored = await self.hub.store.store_telemetry(
            self.building_id, self.device_id, sample, self.hub.now()
        )
        if not stored:
            ack.status.code = code_pb2.ALREADY_EXISTS
            ack.status.message = f"telemetry sequence {sample.sequence} was stored before"
            return ack
        try:
            outdoor = (
                sample.outdoor_temperature_c if sample.HasField("outdoor_temperature_c") else None
            )
            await self.hub.cache.record(
                self.building_id, sample.sample_time.ToDatetime(UTC), sample.readings, outdoor
            )
        except Exception:  # the sample is stored; the cache only speeds reads up
            log.warning("latest-state cache not updated", exc_info=True)
        ack.status.code = code_pb2.OK
        return ack

    async def _reload_zones(self) -> None:
        self.zones_changed = False
        self.zone_stages, self.building_zones = await self.hub.store.served_zones(
            self.building_id, self.device_id
        )

    def _zone_problems(self, sample: ctl.Telemetry) -> list[FieldViolation]:
        found = []
        for i, reading in enumerate(sample.readings):
            path = f"telemetry.readings[{i}]"
            if reading.zone_id not in self.building_zones:
                found.append(
                    FieldViolation(
                        f"{path}.zone_id",
                        f"zone {reading.zone_id} does not exist in building {self.building_id}",
                        "zone.unknown",
                    )
                )
            elif reading.zone_id not in self.zone_stages:
                found.append(
                    FieldViolation(
                        f"{path}.zone_id",
                        f"device {self.device_id} does not serve zone {reading.zone_id}",
                        "zone.not_served",
                    )
                )
            elif (
                reading.HasField("power_stage")
                and reading.power_stage >= self.zone_stages[reading.zone_id]
            ):
                found.append(
                    FieldViolation(
                        f"{path}.power_stage",
                        f"zone {reading.zone_id} has {self.zone_stages[reading.zone_id]} stages",
                        "power_stage.known",
                    )
                )
        return found

    async def _acknowledge(self, ack: ctl.CommandAck) -> None:
        if ack.sequence <= self.last_acknowledged:
            return  # already acknowledged: ignored, as the protocol says
        if ack.sequence > self.highest_sent:
            raise ControlError(
                ErrorKind.ABORTED,
                f"CommandAck for {ack.sequence}, which this session has not delivered",
            )
        if ack.sequence != self.last_acknowledged + 1:
            raise ControlError(
                ErrorKind.ABORTED,
                f"CommandAck for {ack.sequence} skips unacknowledged command "
                f"{self.last_acknowledged + 1}",
            )
        recorded = await self.hub.store.acknowledge(
            self.building_id,
            self.device_id,
            ack.sequence,
            ack.outcome,
            ack.reason,
            self.hub.now(),
        )
        if not recorded:
            raise superseded()
        self.last_acknowledged = ack.sequence

    # ---------------------------------------------------------------- service -> device

    async def _push(self) -> None:
        """Send commands from ``next_sequence`` on, when woken and once per heartbeat."""
        interval_s = self.hub.settings.heartbeat_interval.total_seconds()
        silence = 3 * self.hub.settings.telemetry_interval
        while True:
            await self._check_alive(silence)
            while True:
                batch = await self.hub.store.commands_from(
                    self.building_id, self.device_id, self.next_sequence, _BATCH
                )
                for command in batch:
                    if command.sequence != self.next_sequence:
                        break  # never skip: a gap is filled on the next round
                    self._outbox.put_nowait(ctl.ConnectResponse(setpoint_command=command))
                    self.highest_sent = command.sequence
                    self.next_sequence += 1
                if len(batch) < _BATCH:
                    break
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), interval_s)

    async def _check_alive(self, silence: timedelta) -> None:
        state = await self.hub.store.session_tick(
            self.building_id, self.device_id, self.session_id, self.last_received
        )
        if state == "deleted":
            raise ControlError(ErrorKind.NOT_FOUND, "the device was deleted")
        if state == "superseded":
            raise superseded()
        if self.last_received is not None and self.hub.now() - self.last_received > silence:
            raise ControlError(
                ErrorKind.UNAVAILABLE, "the device sent nothing for three telemetry intervals"
            )


def superseded() -> ControlError:
    return ControlError(ErrorKind.ABORTED, "a newer session of this device superseded this one")


async def next_request(requests: AsyncIterator[bytes]) -> ctl.ConnectRequest | None:
    """The next message, parsed; ``None`` at the end of the stream."""
    try:
        raw = await anext(requests)
    except StopAsyncIteration:
        return None
    try:
        return ctl.ConnectRequest.FromString(raw)
    except DecodeError:
        raise ControlError(ErrorKind.INVALID_ARGUMENT, "message is not a ConnectRequest") from None


def check_whole(request: ctl.ConnectRequest) -> None:
    """A Hello or CommandAck (or an empty message) that breaks a rule ends the session."""
    broken = violations(request)
    if broken:
        raise _invalid(broken, "invalid request")


def _invalid(broken: Sequence[FieldViolation], what: str) -> ControlError:
    summary = "; ".join(f"{v.field}: {v.description}" if v.field else v.description for v in broken)
    return ControlError(ErrorKind.INVALID_ARGUMENT, f"{what}: {summary}", broken)


def _rpc_status(code: int, broken: Sequence[FieldViolation]) -> status_pb2.Status:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=v.field, description=v.description, reason=v.reason
            )
            for v in broken
        ]
    )
    packed = any_pb2.Any()
    packed.Pack(bad)
    message = "; ".join(f"{v.field}: {v.description}" for v in broken)
    return status_pb2.Status(code=code, message=message, details=[packed])
