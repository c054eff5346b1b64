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
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from hvac.common.v1 import common_pb2
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import resources_pb2

from svc_control.cache import StateCache
from svc_control.device_session import DeviceSession, check_whole, next_request, superseded
from svc_control.registry import ControlError, ErrorKind, NewCommand
from svc_control.store import COMMANDS_CHANNEL, PLANS_CHANNEL, SESSIONS_CHANNEL, Store

log = logging.getLogger("svc_control.sessions")

REGION_BY_NAME = {"us-east": common_pb2.REGION_US_EAST, "eu-west": common_pb2.REGION_EU_WEST}


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
        self._sessions: dict[tuple[str, str], DeviceSession] = {}
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
            session.end(superseded())

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
        first = await next_request(requests)
        if first is None:
            return
        if first.WhichOneof("payload") != "hello":
            raise ControlError(ErrorKind.FAILED_PRECONDITION, "the first message must be Hello")
        check_whole(first)
        hello = first.hello
        if peer_identity is not None and peer_identity != device_spiffe_id(
            hello.building_id, hello.device_id
        ):
            raise ControlError(
                ErrorKind.PERMISSION_DENIED,
                f"certificate identity {peer_identity} is not device "
                f"{hello.building_id}/{hello.device_id}",
            )
        session = DeviceSession(self, hello.building_id, hello.device_id, str(uuid.uuid4()))
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
            older.end(superseded())
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
