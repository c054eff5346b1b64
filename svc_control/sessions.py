"""Device sessions: the `Connect` protocol, and the hub that routes commands to open sessions.

A session's durable state (which commands exist, which are acknowledged, which session is the
device's current one) lives in PostgreSQL through :class:`~svc_control.store.Store`, so a device
may reconnect to any instance sharing the database and resume exactly where it left off. What
lives here is per-connection: the next sequence to send in this session (each command once per
session), the highest sequence sent, and the timers for heartbeats and silence.

The hub listens for ``NOTIFY`` from every instance and wakes the matching local session; each
session also polls once per heartbeat interval, so a missed notification only delays.

:meth:`SessionHub.issue_commands` is the internal API for the control loop and overrides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from hvac.common.v1 import common_pb2
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import resources_pb2

from meshkit.errors import FieldViolation
from meshkit.validation import violations
from svc_control.cache import StateCache
from svc_control.registry import ControlError, ErrorKind, NewCommand
from svc_control.store import COMMANDS_CHANNEL, PLANS_CHANNEL, SESSIONS_CHANNEL, Store

log = logging.getLogger("svc_control.sessions")

REGION_BY_NAME = {"us-east": common_pb2.REGION_US_EAST, "eu-west": common_pb2.REGION_EU_WEST}
_BATCH = 256  # commands read per query while catching up


def device_spiffe_id(building_id: str, device_id: str) -> str:
    """The certificate identity a device must present."""
    return f"spiffe://hvac.local/device/{building_id}/{device_id}"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Timers and where this instance runs."""

    heartbeat_interval: timedelta
    telemetry_interval: timedelta
    region: str


@dataclass(frozen=True, slots=True)
class IssueResult:
    """Commands issued, as ``(device_id, command)``, and zones no device commands."""

    issued: list[tuple[str, resources_pb2.SetpointCommand]]
    unserved_zones: list[str]


class SessionHub:
    """All device sessions of this instance, and the way commands reach them."""

    def __init__(
        self,
        store: Store,
        cache: StateCache,
        settings: SessionSettings,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.cache = cache
        self.settings = settings
        self.now = now
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncpg.Connection | None = None

    async def start(self, dsn: str) -> None:
        """Listen for command and session notifications from every instance."""
        self._listener = await asyncpg.connect(dsn)
        await self._listener.add_listener(COMMANDS_CHANNEL, self._notified)
        await self._listener.add_listener(SESSIONS_CHANNEL, self._notified)
        await self._listener.add_listener(PLANS_CHANNEL, self._notified)

    async def close(self) -> None:
        for session in list(self._sessions.values()):
            session.end(ControlError(ErrorKind.UNAVAILABLE, "the service is shutting down"))
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

    def _notified(self, conn: object, pid: int, channel: str, payload: str) -> None:
        note = json.loads(payload)
        if channel == PLANS_CHANNEL:
            for event in self._watchers.get(note["b"], ()):
                event.set()
            return
        session = self._sessions.get((note["b"], note["d"]))
        if session is None:
            return
        if channel == COMMANDS_CHANNEL:
            session.wake.set()
        elif note["x"] == "":
            session.end(ControlError(ErrorKind.NOT_FOUND, "the device was deleted"))
        elif note["x"] == "registered":
            session.zones_changed = True
            session.wake.set()
        elif note["x"] != session.session_id:
            session.end(_superseded())

    async def issue_commands(self, building_id: str, commands: Sequence[NewCommand]) -> IssueResult:
        """Issue ``commands`` to the devices commanding their zones; each device's connected
        session (on any instance) receives them promptly, and a device that is away receives
        them when it reconnects, in order, once each. See ``Store.issue_commands``."""
        issued, unserved = await self.store.issue_commands(building_id, commands, self.now())
        for device_id in {d for d, _ in issued}:
            session = self._sessions.get((building_id, device_id))
            if session is not None:
                session.wake.set()
        return IssueResult(issued, unserved)

    @contextlib.contextmanager
    def plan_events(self, building_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever, on any instance, a plan of the building is published or one of
        its commands is acknowledged; for as long as the context is open."""
        event = asyncio.Event()
        self._watchers.setdefault(building_id, set()).add(event)
        try:
            yield event
        finally:
            self._watchers[building_id].discard(event)
            if not self._watchers[building_id]:
                del self._watchers[building_id]

    async def connect(
        self, requests: AsyncIterator[bytes], peer_identity: str | None
    ) -> AsyncIterator[ctl.ConnectResponse]:
        """Run one `Connect` session; raises ControlError to end the stream with its status.

        ``peer_identity`` is the caller's SPIFFE ID when the transport established it; then it
        must be the device's own (PERMISSION_DENIED otherwise). Without it, Hello identifies.
        """
        first = await _next_request(requests)
        if first is None:
            return
        if first.WhichOneof("payload") != "hello":
            raise ControlError(ErrorKind.FAILED_PRECONDITION, "the first message must be Hello")
        _check_whole(first)
        hello = first.hello
        if peer_identity is not None and peer_identity != device_spiffe_id(
            hello.building_id, hello.device_id
        ):
            raise ControlError(
                ErrorKind.PERMISSION_DENIED,
                f"certificate identity {peer_identity} is not device "
                f"{hello.building_id}/{hello.device_id}",
            )
        session = _Session(self, hello.building_id, hello.device_id, str(uuid.uuid4()))
        key = (session.building_id, session.device_id)
        start = await self.store.open_session(
            session.building_id,
            session.device_id,
            session.session_id,
            hello.last_applied_sequence,
            hello.firmware_version,
            self.now(),
        )
        older = self._sessions.get(key)
        if older is not None:
            older.end(_superseded())
        self._sessions[key] = session
        try:
            session.begin(start.resume_from_sequence, start.zone_stages, start.building_zones)
            welcome = ctl.Welcome(
                session_id=session.session_id,
                resume_from_sequence=start.resume_from_sequence,
                last_telemetry_sequence=start.last_telemetry_sequence,
                region=REGION_BY_NAME[self.settings.region],
            )
            welcome.heartbeat_interval.FromTimedelta(self.settings.heartbeat_interval)
            welcome.telemetry_interval.FromTimedelta(self.settings.telemetry_interval)
            welcome.server_time.FromDatetime(self.now())
            yield ctl.ConnectResponse(welcome=welcome)
            async for response in session.run(requests):
                yield response
        finally:
            if self._sessions.get(key) is session:
                del self._sessions[key]
            await session.stop()


@dataclass(eq=False)
class _Session:
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
            request = await _next_request(requests)
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
                _check_whole(request)
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
            raise _superseded()
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
            raise _superseded()
        if self.last_received is not None and self.hub.now() - self.last_received > silence:
            raise ControlError(
                ErrorKind.UNAVAILABLE, "the device sent nothing for three telemetry intervals"
            )


def _superseded() -> ControlError:
    return ControlError(ErrorKind.ABORTED, "a newer session of this device superseded this one")


async def _next_request(requests: AsyncIterator[bytes]) -> ctl.ConnectRequest | None:
    """The next message, parsed; ``None`` at the end of the stream."""
    try:
        raw = await anext(requests)
    except StopAsyncIteration:
        return None
    try:
        return ctl.ConnectRequest.FromString(raw)
    except DecodeError:
        raise ControlError(ErrorKind.INVALID_ARGUMENT, "message is not a ConnectRequest") from None


def _check_whole(request: ctl.ConnectRequest) -> None:
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
