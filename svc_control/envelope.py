"""The safety envelope: whatever a plan says, the commands sent stay safe.

Every control interval, for each zone, the envelope takes what the plan (or the fallback
thermostat) proposes, lets operator overrides win over it, and returns the command to send.
Callers may rely on these invariants for any input, however malformed the proposal:

1. Setpoints lie inside the zone's safe band, cooling at least `DEAD_BAND_K` above heating.
2. The stage is a valid index and `power_kw` is that stage's power.
3. The building's total commanded power is at most the peak cap (when there is one).
4. Equipment limits hold — the stage changes by at most the ramp limit, a zone that is on stays
   on for its minimum on time, an off zone stays off for its minimum off time, and no zone
   starts more than `max_cycles_per_hour` times in any 60 minutes — with one exception: when
   keeping them would break the peak cap, the cap wins and the command says `cap_forced`.
   Staying at the current stage always satisfies the limits, so the cap is the only conflict.

Precedence per zone: the newest active EMERGENCY override (setpoints = safe band), else the
newest active override naming the zone, else the newest active building-wide override, else the
proposal. Overrides are active in [create_s, expire_s). Pure: no I/O, times are seconds.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from hvac.control.v1 import resources_pb2

from svc_control.plant import DEAD_BAND_K, Band, EquipmentKind, EquipmentLimits, ZonePlant
from svc_control.thermostat import DEFAULT_SETTINGS, ThermostatSettings, thermostat_stage

HOUR_S = 3600.0
_EPS = 1e-9


class Source(enum.IntEnum):
    """Why a command was issued; values are those of `hvac.control.v1.CommandSource`."""

    PLAN = 1
    FALLBACK_THERMOSTAT = 2
    OVERRIDE = 3
    EMERGENCY = 4


class OverrideKind(enum.IntEnum):
    """Values are those of `hvac.control.v1.OverrideKind`."""

    HOLD = 1
    SETPOINT = 2
    EMERGENCY = 3


@dataclass(frozen=True)
class Override:
    """An operator override; `zone_id` None covers the whole building.

    For HOLD, `held_*` are the stage and setpoints in force when it started (the zone's current
    command is used when they are not recorded). For SETPOINT, the setpoints to use.
    """

    override_id: str
    kind: OverrideKind
    create_s: float
    expire_s: float
    zone_id: str | None = None
    heating_setpoint_c: float | None = None
    cooling_setpoint_c: float | None = None
    held_stage: int | None = None

    def active_at(self, now_s: float) -> bool:
        """Whether the override is in force at `now_s`."""
        return self.create_s <= now_s < self.expire_s

    @classmethod
    def from_proto(
        cls, override: resources_pb2.Override, held_stage: int | None = None
    ) -> Override:
        """The override of a stored `Override` message (create and expire times set).

        A cancelled override ends at its cancel time. `held_stage` is the stage a HOLD froze.
        """
        expire_s = override.expire_time.ToNanoseconds() / 1e9
        if override.HasField("cancel_time"):
            expire_s = min(expire_s, override.cancel_time.ToNanoseconds() / 1e9)
        return cls(
            override_id=override.override_id,
            kind=OverrideKind(override.kind),
            create_s=override.create_time.ToNanoseconds() / 1e9,
            expire_s=expire_s,
            zone_id=override.zone_id or None,
            heating_setpoint_c=(
                override.heating_setpoint_c if override.HasField("heating_setpoint_c") else None
            ),
            cooling_setpoint_c=(
                override.cooling_setpoint_c if override.HasField("cooling_setpoint_c") else None
            ),
            held_stage=held_stage,
        )


@dataclass(frozen=True)
class EquipmentState:
    """What the envelope remembers of a zone between intervals (persisted by the caller)."""

    stage: int = 0
    heating_setpoint_c: float | None = None
    cooling_setpoint_c: float | None = None
    last_command_s: float | None = None
    last_switch_s: float | None = None
    start_times_s: tuple[float, ...] = ()


@dataclass(frozen=True)
class Proposal:
    """What the plan or the thermostat would like for a zone this interval."""

    stage: int
    heating_setpoint_c: float
    cooling_setpoint_c: float
    source: Source = Source.PLAN


@dataclass(frozen=True)
class ZoneInput:
    """Everything the envelope needs about one zone."""

    plant: ZonePlant
    state: EquipmentState
    temperature_c: float | None
    proposal: Proposal


@dataclass(frozen=True)
class ZoneCommand:
    """The command to send for one zone, and whether the envelope changed the request."""

    zone_id: str
    stage: int
    power_kw: float
    heating_setpoint_c: float
    cooling_setpoint_c: float
    source: Source
    override_id: str | None
    adjusted: bool
    cap_forced: bool = False


@dataclass(frozen=True)
class EnvelopeResult:
    """Commands and the zones' new equipment states, in input order."""

    commands: tuple[ZoneCommand, ...]
    states: tuple[EquipmentState, ...]

    @property
    def adjustments(self) -> int:
        """Number of zones whose command differs from what was requested."""
        return sum(c.adjusted for c in self.commands)


def override_for(zone_id: str, overrides: Sequence[Override], now_s: float) -> Override | None:
    """The override in force for a zone (see the module's precedence), or None."""
    active = [o for o in overrides if o.active_at(now_s) and o.zone_id in (None, zone_id)]
    newest_first = sorted(active, key=lambda o: o.create_s, reverse=True)
    for tier in (
        [o for o in newest_first if o.kind is OverrideKind.EMERGENCY],
        [o for o in newest_first if o.zone_id == zone_id],
        newest_first,
    ):
        if tier:
            return tier[0]
    return None


def safe_setpoints(safe: Band, heating_c: float, cooling_c: float) -> tuple[float, float]:
    """Setpoints moved inside the safe band with the dead band kept; non-finite ones replaced."""
    if not math.isfinite(heating_c):
        heating_c = safe.lower_c
    if not math.isfinite(cooling_c):
        cooling_c = safe.upper_c
    # Lower bound last: rounding in `upper - dead band` must never push heating below the band.
    heating = max(min(heating_c, safe.upper_c - DEAD_BAND_K), safe.lower_c)
    cooling = min(max(cooling_c, heating + DEAD_BAND_K), safe.upper_c)
    return heating, cooling


def apply_envelope(
    zones: Sequence[ZoneInput],
    overrides: Sequence[Override],
    now_s: float,
    peak_power_cap_kw: float | None,
    settings: ThermostatSettings = DEFAULT_SETTINGS,
) -> EnvelopeResult:
    """The commands for this interval (see the module docstring for what they guarantee)."""
    requests = [_request(z, overrides, now_s, settings) for z in zones]
    stages = [_nearest_legal(z, now_s, r.stage) for z, r in zip(zones, requests, strict=True)]
    forced = _enforce_cap(zones, requests, stages, now_s, peak_power_cap_kw)
    commands, states = [], []
    for i, (zone, request) in enumerate(zip(zones, requests, strict=True)):
        stages_kw = zone.plant.equipment.stages_kw
        heating, cooling = safe_setpoints(
            zone.plant.safe_band, request.heating_setpoint_c, request.cooling_setpoint_c
        )
        adjusted = (
            stages[i] != request.stage
            or heating != request.heating_setpoint_c
            or cooling != request.cooling_setpoint_c
        )
        commands.append(
            ZoneCommand(
                zone_id=zone.plant.zone_id,
                stage=stages[i],
                power_kw=stages_kw[stages[i]],
                heating_setpoint_c=heating,
                cooling_setpoint_c=cooling,
                source=request.source,
                override_id=request.override_id,
                adjusted=adjusted,
                cap_forced=i in forced,
            )
        )
        states.append(_next_state(zone.state, stages[i], heating, cooling, now_s))
    return EnvelopeResult(tuple(commands), tuple(states))


@dataclass(frozen=True)
class _Request:
    stage: int
    heating_setpoint_c: float
    cooling_setpoint_c: float
    source: Source
    override_id: str | None
    priority: int  # lower is reduced first when the cap binds


def _request(
    zone: ZoneInput, overrides: Sequence[Override], now_s: float, settings: ThermostatSettings
) -> _Request:
    plant, state, temp = zone.plant, zone.state, zone.temperature_c
    override = override_for(plant.zone_id, overrides, now_s)
    if override is None:
        p = zone.proposal
        source = p.source if p.source in (Source.PLAN, Source.FALLBACK_THERMOSTAT) else Source.PLAN
        stage = _safe_direction(plant, temp, p.stage)
        return _Request(stage, p.heating_setpoint_c, p.cooling_setpoint_c, source, None, 0)
    if override.kind is OverrideKind.EMERGENCY:
        band = plant.safe_band
        stage = thermostat_stage(temp, band, plant.equipment, state.stage, settings)
        oid = override.override_id
        return _Request(stage, band.lower_c, band.upper_c, Source.EMERGENCY, oid, 2)
    if override.kind is OverrideKind.HOLD:
        held = state.stage if override.held_stage is None else override.held_stage
        heating = state.heating_setpoint_c
        cooling = state.cooling_setpoint_c
        return _Request(
            _safe_direction(plant, temp, held),
            plant.safe_band.lower_c if heating is None else heating,
            plant.safe_band.upper_c if cooling is None else cooling,
            Source.OVERRIDE,
            override.override_id,
            1,
        )
    heating, cooling = safe_setpoints(
        plant.safe_band,
        math.nan if override.heating_setpoint_c is None else override.heating_setpoint_c,
        math.nan if override.cooling_setpoint_c is None else override.cooling_setpoint_c,
    )
    band = Band(heating, cooling)
    stage = thermostat_stage(temp, band, plant.equipment, state.stage, settings)
    return _Request(stage, heating, cooling, Source.OVERRIDE, override.override_id, 1)


def _safe_direction(plant: ZonePlant, temperature_c: float | None, stage: int) -> int:
    """0 when single-direction equipment would push the zone further out of its safe band."""
    if temperature_c is None or not math.isfinite(temperature_c):
        return stage
    kind = plant.equipment.kind
    too_warm = kind is EquipmentKind.HEATING and temperature_c >= plant.safe_band.upper_c
    too_cold = kind is EquipmentKind.COOLING and temperature_c <= plant.safe_band.lower_c
    return 0 if too_warm or too_cold else stage


def _legal(zone: ZoneInput, now_s: float, stage: int) -> bool:
    """Whether moving from the current stage to `stage` keeps every equipment limit."""
    limits: EquipmentLimits = zone.plant.equipment
    state = zone.state
    current = min(max(state.stage, 0), limits.top_stage)
    if stage == current:
        return True
    if limits.max_ramp_kw_per_min is not None and state.last_command_s is not None:
        elapsed_min = max(0.0, now_s - state.last_command_s) / 60.0
        change_kw = abs(limits.stages_kw[stage] - limits.stages_kw[current])
        if change_kw > limits.max_ramp_kw_per_min * elapsed_min + _EPS:
            return False
    since_switch_s = math.inf if state.last_switch_s is None else now_s - state.last_switch_s
    if current > 0 and stage == 0:
        return since_switch_s >= limits.min_on_s
    if current == 0 and stage > 0:
        recent = sum(1 for t in state.start_times_s if now_s - HOUR_S < t <= now_s)
        return since_switch_s >= limits.min_off_s and recent < limits.max_cycles_per_hour
    return True


def _nearest_legal(zone: ZoneInput, now_s: float, wanted: int) -> int:
    """The legal stage closest to `wanted` (clamped into range); ties go to less power."""
    top = zone.plant.equipment.top_stage
    target = min(max(wanted, 0), top)
    candidates = [s for s in range(top + 1) if _legal(zone, now_s, s)]
    return min(candidates, key=lambda s: (abs(s - target), s))


def _enforce_cap(
    zones: Sequence[ZoneInput],
    requests: Sequence[_Request],
    stages: list[int],
    now_s: float,
    cap_kw: float | None,
) -> set[int]:
    """Lower stages in place until the total is within the cap; returns zones forced past limits.

    Zones are lowered one stage at a time: plan and thermostat zones before override zones,
    emergency zones last, and the most powerful first. Legal reductions are used up before any
    limit is broken.
    """
    forced: set[int] = set()
    if cap_kw is None:
        return forced
    if not cap_kw >= 0:
        raise ValueError(f"peak_power_cap_kw must be >= 0, got {cap_kw}")

    def power(i: int) -> float:
        return zones[i].plant.equipment.stages_kw[stages[i]]

    while sum(power(i) for i in range(len(zones))) > cap_kw + _EPS:
        order = sorted(
            (i for i in range(len(zones)) if stages[i] > 0),
            key=lambda i: (requests[i].priority, -power(i)),
        )
        legal = [i for i in order if _legal(zones[i], now_s, stages[i] - 1)]
        chosen = legal[0] if legal else order[0]
        if not legal:
            forced.add(chosen)
        stages[chosen] -= 1
    return forced


def _next_state(
    state: EquipmentState, stage: int, heating_c: float, cooling_c: float, now_s: float
) -> EquipmentState:
    was_on, is_on = state.stage > 0, stage > 0
    starts = tuple(t for t in state.start_times_s if now_s - HOUR_S < t <= now_s)
    switched = was_on != is_on
    return replace(
        state,
        stage=stage,
        heating_setpoint_c=heating_c,
        cooling_setpoint_c=cooling_c,
        last_command_s=now_s,
        last_switch_s=now_s if switched else state.last_switch_s,
        start_times_s=starts + ((now_s,) if switched and is_on else ()),
    )
