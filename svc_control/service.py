"""The control servicer: translates protobuf to domain calls and back, nothing more.

Registry rules live in :mod:`svc_control.registry`, SQL in :mod:`svc_control.store`, device
sessions in :mod:`svc_control.sessions`. A domain refusal (:class:`ControlError`) becomes the
gRPC status of the same name here, with field violations for INVALID_ARGUMENT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import control_service_pb2_grpc as ctl_grpc
from hvac.control.v1 import resources_pb2

from meshkit import Service, abort, invalid_argument, rich_status
from meshkit.errors import DEFAULT_LOCALE
from meshkit.identity import caller_identity
from svc_control import registry, state
from svc_control.cache import StateCache
from svc_control.config import ControlConfig
from svc_control.loop_runtime import running_loop
from svc_control.registry import ControlError, ErrorKind
from svc_control.sessions import REGION_BY_NAME, SessionHub, SessionSettings
from svc_control.store import Once, Store
from svc_control.watch import watch_plans

R = TypeVar("R")
log = logging.getLogger("svc_control.service")
# How far back GetBuildingState looks in PostgreSQL for a zone's reading the cache lacks.
_STATE_LOOKBACK = timedelta(days=1)
_SERVICE = "ControlService"


def status_of(error: ControlError) -> grpc.Status:
    """The gRPC status a caller receives for a domain refusal."""
    if error.kind is ErrorKind.INVALID_ARGUMENT and error.violations:
        return invalid_argument(error.violations)
    localized = error_details_pb2.LocalizedMessage(locale=DEFAULT_LOCALE, message=error.message)
    return rich_status(grpc.StatusCode[error.kind.value], error.message, [localized])


async def _fail(context: grpc.aio.ServicerContext, error: ControlError) -> NoReturn:
    await abort(context, status_of(error))


def _translated(
    method: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]:
    @functools.wraps(method)
    async def call(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except ControlError as error:
            await _fail(context, error)

    return call


def _once(method: str, request: Message) -> Once | None:
    request_id: str = getattr(request, "request_id")  # noqa: B009
    return Once(method, request_id, request) if request_id else None


def _peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The caller's SPIFFE ID when Envoy vouches for it (``meshkit.identity``); ``None`` for a
    direct loopback caller, in which case a device session is identified by its Hello."""
    caller = caller_identity(context)
    return caller.spiffe_id if caller is not None else None


class ControlServicer(ctl_grpc.ControlServiceServicer):
    """The RPCs of ``hvac.control.v1.ControlService``."""

    def __init__(self, store: Store, cache: StateCache, hub: SessionHub) -> None:
        self.store = store
        self.cache = cache
        self.hub = hub
        # Called with the building_id after an override is created or cancelled, so that the
        # control loop can issue the zones' commands at once instead of at the next interval.
        self.on_overrides_changed: Callable[[str], Awaitable[None]] | None = None

    async def _overrides_changed(self, building_id: str) -> None:
        if self.on_overrides_changed is not None:
            await self.on_overrides_changed(building_id)

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)

    # ------------------------------------------------------------------ buildings

    @_translated
    async def CreateBuilding(
        self, request: ctl.CreateBuildingRequest, context: grpc.aio.ServicerContext
    ) -> ctl.CreateBuildingResponse:
        building = registry.new_building(request.building, self.now())
        stored = await self.store.create_building(building, _once("CreateBuilding", request))
        return ctl.CreateBuildingResponse(building=stored)

    @_translated
    async def GetBuilding(
        self, request: ctl.GetBuildingRequest, context: grpc.aio.ServicerContext
    ) -> ctl.GetBuildingResponse:
        return ctl.GetBuildingResponse(building=await self.store.get_building(request.building_id))

    @_translated
    async def ListBuildings(
        self, request: ctl.ListBuildingsRequest, context: grpc.aio.ServicerContext
    ) -> ctl.ListBuildingsResponse:
        page = registry.page_of(request)
        found, more = await self.store.list_buildings(page, request.home_region)
        token = registry.next_page_token(request, [found[-1].building_id]) if more else ""
        return ctl.ListBuildingsResponse(buildings=found, next_page_token=token)

    @_translated
    async def UpdateBuilding(
        self, request: ctl.UpdateBuildingRequest, context: grpc.aio.ServicerContext
    ) -> ctl.UpdateBuildingResponse:
        now, paths = self.now(), list(request.update_mask.paths)
        building = await self.store.update_building(
            request.building.building_id,
            lambda stored: registry.updated_building(stored, request.building, paths, now),
        )
        return ctl.UpdateBuildingResponse(building=building)

    @_translated
    async def DeleteBuilding(
        self, request: ctl.DeleteBuildingRequest, context: grpc.aio.ServicerContext
    ) -> ctl.DeleteBuildingResponse:
        await self.store.delete_building(request.building_id, request.etag)
        with contextlib.suppress(Exception):  # a stale cache entry is harmless
            await self.cache.forget(request.building_id)
        return ctl.DeleteBuildingResponse()

    # ------------------------------------------------------------------ zones

    @_translated
    async def CreateZone(
        self, request: ctl.CreateZoneRequest, context: grpc.aio.ServicerContext
    ) -> ctl.CreateZoneResponse:
        zone = registry.new_zone(request.zone, self.now())
        stored = await self.store.create_zone(zone, _once("CreateZone", request))
        return ctl.CreateZoneResponse(zone=stored)

    @_translated
    async def GetZone(
        self, request: ctl.GetZoneRequest, context: grpc.aio.ServicerContext
    ) -> ctl.GetZoneResponse:
        return ctl.GetZoneResponse(
            zone=await self.store.get_zone(request.building_id, request.zone_id)
        )

    @_translated
    async def ListZones(
        self, request: ctl.ListZonesRequest, context: grpc.aio.ServicerContext
    ) -> ctl.ListZonesResponse:
        page = registry.page_of(request)
        found, more = await self.store.list_zones(request.building_id, page)
        token = registry.next_page_token(request, [found[-1].zone_id]) if more else ""
        return ctl.ListZonesResponse(zones=found, next_page_token=token)

    @_translated
    async def UpdateZone(
        self, request: ctl.UpdateZoneRequest, context: grpc.aio.ServicerContext
    ) -> ctl.UpdateZoneResponse:
        now, paths = self.now(), list(request.update_mask.paths)
        zone = await self.store.update_zone(
            request.zone.building_id,
            request.zone.zone_id,
            lambda stored: registry.updated_zone(stored, request.zone, paths, now),
        )
        return ctl.UpdateZoneResponse(zone=zone)

    @_translated
    async def DeleteZone(
        self, request: ctl.DeleteZoneRequest, context: grpc.aio.ServicerContext
    ) -> ctl.DeleteZoneResponse:
        await self.store.delete_zone(request.building_id, request.zone_id, request.etag, self.now())
        return ctl.DeleteZoneResponse()

    # ------------------------------------------------------------------ devices

    @_translated
    async def RegisterDevice(
        self, request: ctl.RegisterDeviceRequest, context: grpc.aio.ServicerContext
    ) -> ctl.RegisterDeviceResponse:
        given, now = request.device, self.now()
        device = await self.store.register_device(
            given.building_id,
            given.device_id,
            lambda previous: registry.new_device(given, now, previous),
        )
        return ctl.RegisterDeviceResponse(device=device)

    @_translated
    async def GetDevice(
        self, request: ctl.GetDeviceRequest, context: grpc.aio.ServicerContext
    ) -> ctl.GetDeviceResponse:
        return ctl.GetDeviceResponse(
            device=await self.store.get_device(request.building_id, request.device_id)
        )

    @_translated
    async def ListDevices(
        self, request: ctl.ListDevicesRequest, context: grpc.aio.ServicerContext
    ) -> ctl.ListDevicesResponse:
        page = registry.page_of(request)
        found, more = await self.store.list_devices(request.building_id, page)
        token = registry.next_page_token(request, [found[-1].device_id]) if more else ""
        return ctl.ListDevicesResponse(devices=found, next_page_token=token)

    @_translated
    async def DeleteDevice(
        self, request: ctl.DeleteDeviceRequest, context: grpc.aio.ServicerContext
    ) -> ctl.DeleteDeviceResponse:
        await self.store.delete_device(request.building_id, request.device_id)
        return ctl.DeleteDeviceResponse()

    # ------------------------------------------------------------------ sessions

    async def Connect(  # type: ignore[override]  # raw bytes: see _add_to_server
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ctl.ConnectResponse]:
        try:
            async for response in self.hub.connect(requests, _peer_identity(context)):
                yield response
        except ControlError as error:
            await _fail(context, error)

    async def WatchPlans(
        self, request: ctl.WatchPlansRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ctl.WatchPlansResponse]:
        start = request.start_time.ToDatetime(UTC) if request.HasField("start_time") else None
        try:
            async for event in watch_plans(
                self.hub, request.building_id, start, frozenset(request.zone_ids)
            ):
                yield event
        except ControlError as error:
            await _fail(context, error)

    async def publish_plan(self, plan: resources_pb2.Plan) -> None:
        """Internal API for the control loop: store a plan; WatchPlans subscribers get it."""
        await self.store.publish_plan(plan)

    # ------------------------------------------------------------------ overrides and state

    @_translated
    async def CreateOverride(
        self, request: ctl.CreateOverrideRequest, context: grpc.aio.ServicerContext
    ) -> ctl.CreateOverrideResponse:
        given, now = request.override, self.now()
        override_id, creator = str(uuid.uuid4()), _peer_identity(context) or ""
        override = await self.store.create_override(
            given.building_id,
            given.zone_id,
            lambda zones: state.new_override(given, now, override_id, creator, zones),
            _once("CreateOverride", request),
        )
        await self._overrides_changed(given.building_id)
        return ctl.CreateOverrideResponse(override=override)

    @_translated
    async def ListOverrides(
        self, request: ctl.ListOverridesRequest, context: grpc.aio.ServicerContext
    ) -> ctl.ListOverridesResponse:
        page = registry.page_of(request)
        found, more = await self.store.list_overrides(
            request.building_id, request.zone_id, request.state, page, self.now()
        )
        token = ""
        if more:
            last = found[-1]
            key = [last.create_time.ToDatetime(UTC).isoformat(), last.override_id]
            token = registry.next_page_token(request, key)
        return ctl.ListOverridesResponse(overrides=found, next_page_token=token)

    @_translated
    async def CancelOverride(
        self, request: ctl.CancelOverrideRequest, context: grpc.aio.ServicerContext
    ) -> ctl.CancelOverrideResponse:
        override = await self.store.cancel_override(
            request.building_id, request.override_id, self.now()
        )
        await self._overrides_changed(request.building_id)
        return ctl.CancelOverrideResponse(override=override)

    @_translated
    async def GetBuildingState(
        self, request: ctl.GetBuildingStateRequest, context: grpc.aio.ServicerContext
    ) -> ctl.GetBuildingStateResponse:
        now, building_id = self.now(), request.building_id
        building, zones, commands, connected = await self.store.building_snapshot(building_id, now)
        active, _ = await self.store.list_overrides(
            building_id, "", resources_pb2.OVERRIDE_STATE_ACTIVE, None, now
        )
        readings = await self._latest_readings(building_id, [z.zone_id for z in zones], now)
        built = state.building_state(
            building,
            zones,
            commands,
            readings,
            active,
            await self.store.latest_plan(building_id),
            await self.store.fallback_stats(building_id, now),
            connected,
            REGION_BY_NAME[self.hub.settings.region],
            now,
        )
        return ctl.GetBuildingStateResponse(state=built)

    async def _latest_readings(
        self, building_id: str, zone_ids: list[str], now: datetime
    ) -> dict[str, tuple[resources_pb2.ZoneReading, datetime]]:
        """From the cache; zones it lacks (lost, flushed, down) are read from PostgreSQL and
        written back."""
        try:
            cached = (await self.cache.latest(building_id)).zones
        except Exception:  # the cache is an optimisation; PostgreSQL has every sample
            log.warning("latest-state cache unreadable", exc_info=True)
            cached = {}
        readings = {z: (entry.reading, entry.sample_time) for z, entry in cached.items()}
        missing = [z for z in zone_ids if z not in readings]
        if missing:
            found = await self.store.latest_readings(building_id, missing, now - _STATE_LOOKBACK)
            readings.update(found)
            with contextlib.suppress(Exception):
                for reading, sample_time in found.values():
                    await self.cache.record(building_id, sample_time, [reading], None)
        return readings


def _add_to_server(servicer: ControlServicer, server: grpc.aio.Server) -> None:
    """Register the servicer, with `Connect` reading raw bytes.

    The validation interceptor ends a stream at the first invalid message. `Connect` must not:
    an invalid telemetry sample is answered with a TelemetryAck and the session goes on. A method
    registered without a request deserializer is left alone by the interceptor, and the session
    parses and validates each message itself (:mod:`svc_control.sessions`).
    """
    descriptor = ctl.DESCRIPTOR.services_by_name[_SERVICE]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in descriptor.methods:
        request_type = getattr(ctl, method.input_type.name)
        response_type = getattr(ctl, method.output_type.name)
        behaviour = getattr(servicer, method.name)
        streams = (method.client_streaming, method.server_streaming)
        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[streams]
        handlers[method.name] = make(
            behaviour,
            request_deserializer=None if method.name == "Connect" else request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(descriptor.full_name, handlers),)
    )


@contextlib.asynccontextmanager
async def services(config: ControlConfig) -> AsyncIterator[list[Service]]:
    """The services this process serves, open for as long as the context is: migrations are
    applied and the backends connected before the first RPC."""
    heartbeat = timedelta(seconds=config.heartbeat_interval_s)
    store = await Store.open(config.database_url, config.db_pool_size, 3 * heartbeat)
    cache = StateCache.open(config.redis_url, config.redis_key_prefix)
    hub = SessionHub(
        store,
        cache,
        SessionSettings(heartbeat, timedelta(seconds=config.telemetry_interval_s), config.region),
    )
    try:
        await hub.start(config.database_url)
        servicer = ControlServicer(store, cache, hub)
        service = Service.generated(ctl, ctl_grpc, _SERVICE, servicer)
        async with running_loop(config, servicer):
            yield [dataclasses.replace(service, add_to_server=_add_to_server)]
    finally:
        await hub.close()
        await cache.close()
        await store.close()


__all__ = ["ControlServicer", "services", "status_of"]
