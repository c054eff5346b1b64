"""What the control service knows about a building's zones: comfort, safe band, equipment.

Domain twins of the registry's `Building` and `Zone` messages, with the defaults of the contract
applied (minimum on 3 min, off 5 min, 6 cycles per hour, 15-minute control interval). Pure: no
I/O. Callers may rely on every `ZonePlant` having a safe band at least `DEAD_BAND_K` wide and
stages that start at 0 kW and strictly increase.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from hvac.control.v1 import resources_pb2

from svc_control.schedules import Tariff, WeeklyWindow, in_any

DEAD_BAND_K = 2.8
DEFAULT_MIN_ON_S = 180.0
DEFAULT_MIN_OFF_S = 300.0
DEFAULT_MAX_CYCLES_PER_HOUR = 6
DEFAULT_CONTROL_INTERVAL_S = 900.0


class EquipmentKind(enum.IntEnum):
    """Which way the equipment moves heat; values are those of `hvac.control.v1.EquipmentKind`."""

    HEATING = 1
    COOLING = 2
    REVERSIBLE = 3

    @property
    def can_heat(self) -> bool:
        """Whether the equipment can add heat to the zone."""
        return self is not EquipmentKind.COOLING

    @property
    def can_cool(self) -> bool:
        """Whether the equipment can remove heat from the zone."""
        return self is not EquipmentKind.HEATING


@dataclass(frozen=True)
class Band:
    """A temperature interval [lower_c, upper_c], °C."""

    lower_c: float
    upper_c: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lower_c) and math.isfinite(self.upper_c)):
            raise ValueError("band limits must be finite")
        if not self.lower_c < self.upper_c:
            raise ValueError(f"band lower_c {self.lower_c} must be below upper_c {self.upper_c}")

    def clamp(self, value_c: float) -> float:
        """`value_c` moved into the band."""
        return min(max(value_c, self.lower_c), self.upper_c)


@dataclass(frozen=True)
class EquipmentLimits:
    """Discrete stages (kW, stage 0 is off) and the limits that protect the machine."""

    kind: EquipmentKind
    stages_kw: tuple[float, ...]
    min_on_s: float = DEFAULT_MIN_ON_S
    min_off_s: float = DEFAULT_MIN_OFF_S
    max_cycles_per_hour: int = DEFAULT_MAX_CYCLES_PER_HOUR
    max_ramp_kw_per_min: float | None = None

    def __post_init__(self) -> None:
        stages = self.stages_kw
        if len(stages) < 2 or stages[0] != 0 or any(a >= b for a, b in itertools.pairwise(stages)):
            raise ValueError(f"stages must start at 0 and increase strictly, got {stages}")
        if self.min_on_s < 0 or self.min_off_s < 0 or self.max_cycles_per_hour < 1:
            raise ValueError("minimum times must be >= 0 and max_cycles_per_hour >= 1")
        if self.max_ramp_kw_per_min is not None and not self.max_ramp_kw_per_min > 0:
            raise ValueError("max_ramp_kw_per_min must be positive when set")

    @property
    def top_stage(self) -> int:
        """Index of the highest stage."""
        return len(self.stages_kw) - 1

    @classmethod
    def from_proto(cls, equipment: resources_pb2.Equipment) -> EquipmentLimits:
        """Limits of a validated `Equipment` message, contract defaults applied."""
        return cls(
            kind=EquipmentKind(equipment.kind),
            stages_kw=tuple(equipment.power_stages_kw),
            min_on_s=(
                equipment.min_on_duration.ToTimedelta().total_seconds()
                if equipment.HasField("min_on_duration")
                else DEFAULT_MIN_ON_S
            ),
            min_off_s=(
                equipment.min_off_duration.ToTimedelta().total_seconds()
                if equipment.HasField("min_off_duration")
                else DEFAULT_MIN_OFF_S
            ),
            max_cycles_per_hour=equipment.max_cycles_per_hour or DEFAULT_MAX_CYCLES_PER_HOUR,
            max_ramp_kw_per_min=equipment.max_ramp_kw_per_min or None,
        )


@dataclass(frozen=True)
class ZonePlant:
    """One zone as control plans it."""

    zone_id: str
    floor_area_m2: float
    occupied_band: Band
    unoccupied_band: Band
    safe_band: Band
    equipment: EquipmentLimits
    occupancy: tuple[WeeklyWindow, ...] = ()

    def __post_init__(self) -> None:
        if self.safe_band.upper_c - self.safe_band.lower_c < DEAD_BAND_K - 1e-9:
            raise ValueError(f"safe band of {self.zone_id} is narrower than {DEAD_BAND_K} K")

    def scheduled_occupied(self, local: datetime) -> bool:
        """Whether the occupancy schedule covers local time `local`."""
        return in_any(self.occupancy, local)

    def comfort_band(self, local: datetime, sensed_occupied: bool = False) -> Band:
        """The comfort band in force: occupied by schedule or by sensing, else unoccupied."""
        occupied = sensed_occupied or self.scheduled_occupied(local)
        return self.occupied_band if occupied else self.unoccupied_band

    @classmethod
    def from_proto(cls, zone: resources_pb2.Zone) -> ZonePlant:
        """The plant of a validated `Zone` message."""
        comfort = zone.comfort
        return cls(
            zone_id=zone.zone_id,
            floor_area_m2=zone.floor_area_m2,
            occupied_band=Band(comfort.occupied.lower_c, comfort.occupied.upper_c),
            unoccupied_band=Band(comfort.unoccupied.lower_c, comfort.unoccupied.upper_c),
            safe_band=Band(zone.safe_band.min_c, zone.safe_band.max_c),
            equipment=EquipmentLimits.from_proto(zone.equipment),
            occupancy=tuple(WeeklyWindow.from_proto(w) for w in zone.occupancy_schedule),
        )


@dataclass(frozen=True)
class BuildingPlant:
    """A building as control plans it: its zones, tariff, time zone, cap and interval."""

    building_id: str
    time_zone: ZoneInfo
    tariff: Tariff
    zones: tuple[ZonePlant, ...]
    peak_power_cap_kw: float | None = None
    control_interval_s: float = DEFAULT_CONTROL_INTERVAL_S

    @property
    def floor_area_m2(self) -> float:
        """Conditioned floor area of the planned zones."""
        return sum(z.floor_area_m2 for z in self.zones)

    @classmethod
    def from_proto(
        cls, building: resources_pb2.Building, zones: Sequence[resources_pb2.Zone]
    ) -> BuildingPlant:
        """The plant of a validated, stored `Building` and its zones (in planning order)."""
        interval_s = (
            building.control_interval.ToTimedelta().total_seconds()
            if building.HasField("control_interval")
            else DEFAULT_CONTROL_INTERVAL_S
        )
        return cls(
            building_id=building.building_id,
            time_zone=ZoneInfo(building.time_zone),
            tariff=Tariff.from_proto(building.tariff),
            zones=tuple(ZonePlant.from_proto(z) for z in zones),
            peak_power_cap_kw=building.peak_power_cap_kw or None,
            control_interval_s=interval_s,
        )
