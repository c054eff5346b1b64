"""The rules of the registry, decided without I/O: creation defaults, update masks, etags, pages.

Resources are the contract's own messages (``resources_pb2.Building``, ``Zone``, ``Device``,
``Override``): they are plain data here, never sent anywhere by this module. Every function either
returns the resource as it must be stored, or raises :class:`ControlError` naming the status a
caller gets (its ``kind`` is named like the gRPC status code) and, for bad input, the fields.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import secrets
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from google.protobuf.message import Message
from hvac.control.v1 import resources_pb2

from meshkit.errors import FieldViolation
from meshkit.validation import violations

DEFAULT_CONTROL_INTERVAL = timedelta(minutes=15)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

# Fields an update mask may name; "*" means all of them.
BUILDING_UPDATABLE = (
    "display_name",
    "floor_area_m2",
    "time_zone",
    "tariff",
    "peak_power_cap_kw",
    "control_interval",
)
ZONE_UPDATABLE = (
    "display_name",
    "floor_area_m2",
    "comfort",
    "occupancy_schedule",
    "safe_band",
    "equipment",
)
# Set by the service; a client may echo them, and they are ignored.
OUTPUT_ONLY = ("create_time", "update_time", "etag")


class ErrorKind(enum.Enum):
    """Why a request was refused; each name is the gRPC status code the caller receives."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAVAILABLE = "UNAVAILABLE"


class ControlError(Exception):
    """A refused request: the status kind, a message for people, and field violations."""

    def __init__(
        self, kind: ErrorKind, message: str, violations: Sequence[FieldViolation] = ()
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.violations = tuple(violations)


def invalid(field: str, description: str, reason: str) -> ControlError:
    """INVALID_ARGUMENT about one field."""
    return ControlError(
        ErrorKind.INVALID_ARGUMENT,
        f"invalid request: {field}: {description}",
        [FieldViolation(field, description, reason)],
    )


def new_etag() -> str:
    """A fresh opaque version tag. Random rather than a counter, so that a building deleted and
    created again never matches an etag read before the deletion."""
    return secrets.token_hex(8)


def check_etag(resource: str, stored_etag: str, given_etag: str) -> None:
    """ABORTED when ``given_etag`` is set and differs from the stored one."""
    if given_etag and given_etag != stored_etag:
        raise ControlError(
            ErrorKind.ABORTED,
            f"{resource} changed since it was read (etag {given_etag!r} is stale); "
            "read it again and retry",
        )


def check_time_zone(field: str, name: str) -> None:
    """INVALID_ARGUMENT unless ``name`` is an IANA time zone known here."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise invalid(field, f"unknown IANA time zone {name!r}", "time_zone.known") from None


def _stamp(resource: Message, now: datetime, create: bool) -> None:
    if create:
        resource.create_time.FromDatetime(now)  # type: ignore[attr-defined]
    resource.update_time.FromDatetime(now)  # type: ignore[attr-defined]
    resource.etag = new_etag()  # type: ignore[attr-defined]


def new_building(given: resources_pb2.Building, now: datetime) -> resources_pb2.Building:
    """The building to store for a CreateBuilding request: output-only fields set by us, the
    control interval defaulted. Raises INVALID_ARGUMENT for an unknown time zone."""
    check_time_zone("building.time_zone", given.time_zone)
    building = resources_pb2.Building()
    building.CopyFrom(given)
    for name in OUTPUT_ONLY:
        building.ClearField(name)  # type: ignore[arg-type]
    if not building.HasField("control_interval"):
        building.control_interval.FromTimedelta(DEFAULT_CONTROL_INTERVAL)
    _stamp(building, now, create=True)
    return building


def updated_building(
    stored: resources_pb2.Building,
    patch: resources_pb2.Building,
    paths: Sequence[str],
    now: datetime,
) -> resources_pb2.Building:
    """``stored`` with the fields named by ``paths`` (or, with no paths, the fields ``patch``
    sets) taken from ``patch``. Raises ABORTED on a stale etag, INVALID_ARGUMENT when
    ``home_region`` differs from the stored one or the result breaks a rule."""
    check_etag(f"building {stored.building_id}", stored.etag, patch.etag)
    if patch.home_region and patch.home_region != stored.home_region:
        raise invalid(
            "building.home_region", "home_region cannot be changed", "home_region.immutable"
        )
    building = resources_pb2.Building()
    building.CopyFrom(stored)
    _apply_mask(building, patch, paths, BUILDING_UPDATABLE)
    if not building.HasField("control_interval"):
        building.control_interval.FromTimedelta(DEFAULT_CONTROL_INTERVAL)
    check_time_zone("building.time_zone", building.time_zone)
    _check_rules("building", building)
    _stamp(building, now, create=False)
    return building


def new_zone(given: resources_pb2.Zone, now: datetime) -> resources_pb2.Zone:
    """The zone to store for a CreateZone request (output-only fields set by us)."""
    zone = resources_pb2.Zone()
    zone.CopyFrom(given)
    for name in OUTPUT_ONLY:
        zone.ClearField(name)  # type: ignore[arg-type]
    _stamp(zone, now, create=True)
    return zone


def updated_zone(
    stored: resources_pb2.Zone,
    patch: resources_pb2.Zone,
    paths: Sequence[str],
    now: datetime,
) -> resources_pb2.Zone:
    """``stored`` updated as :func:`updated_building` does; the result must satisfy every rule
    of ``Zone`` (a new safe band must still enclose the stored comfort bands)."""
    check_etag(f"zone {stored.building_id}/{stored.zone_id}", stored.etag, patch.etag)
    zone = resources_pb2.Zone()
    zone.CopyFrom(stored)
    _apply_mask(zone, patch, paths, ZONE_UPDATABLE)
    _check_rules("zone", zone)
    _stamp(zone, now, create=False)
    return zone


def new_device(
    given: resources_pb2.Device, now: datetime, previous: resources_pb2.Device | None
) -> resources_pb2.Device:
    """The registration to store: the caller's kind, display name and zones; the service's
    fields (connection state, firmware, sequences, create_time) kept from ``previous``."""
    device = resources_pb2.Device()
    if previous is not None:
        device.CopyFrom(previous)
    else:
        device.create_time.FromDatetime(now)
        device.connection_state = resources_pb2.CONNECTION_STATE_NEVER_CONNECTED
    device.building_id = given.building_id
    device.device_id = given.device_id
    device.display_name = given.display_name
    device.kind = given.kind
    del device.zone_ids[:]
    device.zone_ids.extend(given.zone_ids)
    device.update_time.FromDatetime(now)
    return device


def _apply_mask(
    target: Message, patch: Message, paths: Sequence[str], updatable: Sequence[str]
) -> None:
    if not paths:
        chosen = [name for name in updatable if _is_set(patch, name)]
    elif "*" in paths:
        chosen = list(updatable)
    else:
        chosen = list(dict.fromkeys(paths))  # validation already restricted the names
    for name in chosen:
        field = patch.DESCRIPTOR.fields_by_name[name]
        if field.is_repeated:
            del getattr(target, name)[:]
            getattr(target, name).extend(getattr(patch, name))
        elif field.message_type is not None:
            if patch.HasField(name):
                getattr(target, name).CopyFrom(getattr(patch, name))
            else:
                target.ClearField(name)
        else:
            setattr(target, name, getattr(patch, name))


def _is_set(message: Message, name: str) -> bool:
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        return len(getattr(message, name)) > 0
    if field.message_type is not None:
        return message.HasField(name)
    return bool(getattr(message, name))


def _check_rules(prefix: str, resource: Message) -> None:
    broken = violations(resource)
    if broken:
        fixed = [FieldViolation(f"{prefix}.{v.field}", v.description, v.reason) for v in broken]
        summary = "; ".join(f"{v.field}: {v.description}" for v in fixed)
        raise ControlError(ErrorKind.INVALID_ARGUMENT, f"invalid request: {summary}", fixed)


# ------------------------------------------------------------------------------ commands


@dataclass(frozen=True, slots=True)
class NewCommand:
    """A setpoint command to issue for one zone; the service numbers it for the zone's device.

    ``source`` is a ``resources_pb2.CommandSource`` value; ``plan_id`` is set for PLAN and
    FALLBACK_THERMOSTAT commands, ``override_id`` for OVERRIDE and EMERGENCY ones.
    """

    zone_id: str
    heating_setpoint_c: float
    cooling_setpoint_c: float
    power_stage: int
    power_kw: float
    valid_from_time: datetime
    valid_until_time: datetime
    source: int
    plan_id: str = ""
    override_id: str = ""

    def problems(self, stages: int) -> list[str]:
        """What makes this command impossible to send to a zone with ``stages`` power stages."""
        found = []
        if not 0 <= self.power_stage < stages:
            found.append(f"power_stage {self.power_stage} is not one of the zone's {stages}")
        if self.cooling_setpoint_c < self.heating_setpoint_c:
            found.append("cooling_setpoint_c is below heating_setpoint_c")
        if self.valid_until_time <= self.valid_from_time:
            found.append("valid_until_time is not after valid_from_time")
        if self.source == resources_pb2.COMMAND_SOURCE_UNSPECIFIED:
            found.append("source is unspecified")
        return found


# ------------------------------------------------------------------------------ pages


@dataclass(frozen=True, slots=True)
class Page:
    """Where a page starts (after ``after``; empty for the first page) and how long it is."""

    after: tuple[str, ...]
    size: int


def request_fingerprint(request: Message) -> str:
    """Hash of a list request without its paging fields: a page token is valid only for it."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("page_token")
    copy.ClearField("page_size")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


def page_of(request: Message) -> Page:
    """The page a list request asks for. Raises INVALID_ARGUMENT for a token that is malformed
    or was issued for a request with other filters."""
    size = getattr(request, "page_size") or DEFAULT_PAGE_SIZE  # noqa: B009
    size = min(size, MAX_PAGE_SIZE)
    token: str = getattr(request, "page_token")  # noqa: B009
    if not token:
        return Page((), size)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        fingerprint, after = decoded["f"], decoded["a"]
        if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
            raise ValueError("bad key")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise invalid("page_token", "malformed page token", "page_token.malformed") from None
    if fingerprint != request_fingerprint(request):
        raise invalid(
            "page_token",
            "page token was issued for a request with other fields",
            "page_token.mismatch",
        )
    return Page(tuple(after), size)


def next_page_token(request: Message, last_key: Sequence[str]) -> str:
    """The token of the page after the one ending with the item keyed ``last_key``."""
    body = json.dumps({"f": request_fingerprint(request), "a": list(last_key)})
    return base64.urlsafe_b64encode(body.encode()).decode()
