"""A multi-zone building: the world the control service must learn and keep comfortable.

Each zone has an air node and, unless its mass capacity is 0, a thermal-mass node (walls, slab,
furniture). Air exchanges heat with the outdoors through the envelope, with its mass node, and
with adjacent zones through couplings. Internal gains (people, appliances) follow the zone's
true occupancy; solar gains enter through the zone's windows and warm mostly the mass. HVAC
equipment adds (heating) or removes (cooling) `cop` kW of heat per kW of electricity, into the air.

The parameters here are the simulator's ground truth. Nothing in `svc_control` may read them: the
control side sees only `Observation`s (what an edge device would report).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from sim.network import Array, ThermalNetwork
from sim.weather import Weather
from svc_control.plant import EquipmentKind
from svc_control.schedules import WeeklyWindow, in_any


@dataclass(frozen=True)
class EquipmentSpec:
    """A zone's HVAC unit: electrical power per stage (stage 0 is off), its efficiency, and the
    minimum run and rest times its own controller enforces (as real compressors do)."""

    kind: EquipmentKind
    stages_kw: tuple[float, ...]
    cop: float = 3.0
    min_on_s: float = 180.0
    min_off_s: float = 300.0

    def __post_init__(self) -> None:
        # The same enum as control's: the kind is registered with the zone, not hidden.
        stages = self.stages_kw
        if len(stages) < 2 or stages[0] != 0 or any(a >= b for a, b in itertools.pairwise(stages)):
            raise ValueError(f"stages must start at 0 and increase strictly, got {stages}")
        if not self.cop > 0:
            raise ValueError("cop must be positive")


@dataclass(frozen=True)
class ComfortBands:
    """The true comfort requirement judged by the KPIs: (lower_c, upper_c) per occupancy."""

    occupied: tuple[float, float] = (21.0, 24.0)
    unoccupied: tuple[float, float] = (15.0, 30.0)


@dataclass(frozen=True)
class ZoneSpec:
    """Ground truth of one zone."""

    zone_id: str
    floor_area_m2: float
    air_capacity_kwh_per_k: float
    mass_capacity_kwh_per_k: float
    air_mass_resistance_k_per_kw: float
    envelope_resistance_k_per_kw: float
    equipment: EquipmentSpec
    occupancy: tuple[WeeklyWindow, ...] = ()
    occupied_gain_w_per_m2: float = 0.0
    unoccupied_gain_w_per_m2: float = 0.0
    solar_aperture_m2: float = 0.0
    solar_to_mass_fraction: float = 0.6
    comfort: ComfortBands = field(default_factory=ComfortBands)


@dataclass(frozen=True)
class Coupling:
    """A wall or opening between two zones."""

    zone_a: str
    zone_b: str
    resistance_k_per_kw: float


@dataclass(frozen=True)
class BuildingSpec:
    """Ground truth of a building."""

    zones: tuple[ZoneSpec, ...]
    couplings: tuple[Coupling, ...] = ()
    time_zone: str = "UTC"

    @property
    def floor_area_m2(self) -> float:
        """Total conditioned floor area."""
        return sum(z.floor_area_m2 for z in self.zones)

    def network(self) -> tuple[ThermalNetwork, list[int]]:
        """The RC network (air nodes 0..n-1, then mass nodes) and each zone's mass node or -1."""
        index = {z.zone_id: i for i, z in enumerate(self.zones)}
        if len(index) != len(self.zones):
            raise ValueError("zone ids must be unique")
        capacities = [z.air_capacity_kwh_per_k for z in self.zones]
        outdoor = [1.0 / z.envelope_resistance_k_per_kw for z in self.zones]
        conductances: dict[tuple[int, int], float] = {}
        mass_node = []
        for i, zone in enumerate(self.zones):
            if zone.mass_capacity_kwh_per_k > 0:
                mass_node.append(len(capacities))
                conductances[(i, len(capacities))] = 1.0 / zone.air_mass_resistance_k_per_kw
                capacities.append(zone.mass_capacity_kwh_per_k)
                outdoor.append(0.0)
            else:
                mass_node.append(-1)
        for c in self.couplings:
            pair = (index[c.zone_a], index[c.zone_b])
            conductances[pair] = conductances.get(pair, 0.0) + 1.0 / c.resistance_k_per_kw
        return ThermalNetwork(capacities, conductances, outdoor), mass_node


@dataclass(frozen=True)
class ZoneTelemetry:
    """What a device reports about one zone (cf. `hvac.control.v1.ZoneReading`)."""

    zone_id: str
    temperature_c: float
    occupied: bool
    power_kw: float
    power_stage: int


@dataclass(frozen=True)
class Observation:
    """One telemetry sample of the whole building (cf. `hvac.control.v1.Telemetry`)."""

    time: datetime
    outdoor_temperature_c: float
    zones: tuple[ZoneTelemetry, ...]


@dataclass(frozen=True)
class StepRecord:
    """What happened during one simulation step; arrays have one entry per zone."""

    start: datetime
    duration_s: float
    outdoor_temperature_c: float
    stages: tuple[int, ...]
    power_kw: Array
    occupied: tuple[bool, ...]
    air_end_c: Array
    air_mean_c: Array
    hvac_heat_kwh: float
    gains_kwh: float
    outdoor_gain_kwh: float
    stored_change_kwh: float


class BuildingSimulator:
    """Steps a `BuildingSpec` through time under a weather profile.

    `step` takes the stage each zone's equipment runs at (and, for reversible equipment, whether
    it heats) and holds everything constant for the step; use short steps (a minute) for
    realistic weather and thermostat behaviour. `observe` returns telemetry, optionally with
    Gaussian sensor noise.
    """

    def __init__(
        self,
        spec: BuildingSpec,
        weather: Weather,
        start: datetime,
        initial_temperature_c: float = 20.0,
        sensor_noise_sd_k: float = 0.0,
        seed: int = 0,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.spec = spec
        self.weather = weather
        self.now = start
        self.network, self._mass_node = spec.network()
        self.state_c: Array = np.full(self.network.size, float(initial_temperature_c))
        self._zone_tz = ZoneInfo(spec.time_zone)
        self._noise_sd_k = sensor_noise_sd_k
        self._rng = np.random.default_rng(seed)
        self._stages: tuple[int, ...] = tuple(0 for _ in spec.zones)

    @property
    def air_temperatures_c(self) -> Array:
        """True air temperature of each zone now."""
        return self.state_c[: len(self.spec.zones)].copy()

    def occupied(self, when: datetime) -> tuple[bool, ...]:
        """True occupancy of each zone at `when`."""
        local = when.astimezone(self._zone_tz)
        return tuple(in_any(z.occupancy, local) for z in self.spec.zones)

    def observe(self) -> Observation:
        """Telemetry now: measured air temperatures, occupancy, running stage and power."""
        air = self.air_temperatures_c
        if self._noise_sd_k > 0:
            air = air + self._rng.normal(0.0, self._noise_sd_k, air.size)
        occupied = self.occupied(self.now)
        return Observation(
            time=self.now,
            outdoor_temperature_c=self.weather.outdoor_temperature_c(self.now),
            zones=tuple(
                ZoneTelemetry(
                    zone_id=z.zone_id,
                    temperature_c=float(air[i]),
                    occupied=occupied[i],
                    power_kw=z.equipment.stages_kw[self._stages[i]],
                    power_stage=self._stages[i],
                )
                for i, z in enumerate(self.spec.zones)
            ),
        )

    def step(
        self, stages: Sequence[int], duration_s: float, heating: Sequence[bool] | None = None
    ) -> StepRecord:
        """Run zone i at `stages[i]` for `duration_s`; `heating[i]` is a reversible unit's mode."""
        zones = self.spec.zones
        if len(stages) != len(zones):
            raise ValueError(f"need {len(zones)} stages, got {len(stages)}")
        for zone, stage in zip(zones, stages, strict=True):
            if not 0 <= stage < len(zone.equipment.stages_kw):
                raise ValueError(f"zone {zone.zone_id}: no stage {stage}")
        hours = duration_s / 3600.0
        outdoor_c = self.weather.outdoor_temperature_c(self.now)
        solar_w_per_m2 = self.weather.solar_irradiance_w_per_m2(self.now)
        occupied = self.occupied(self.now)
        power_kw = np.array([z.equipment.stages_kw[s] for z, s in zip(zones, stages, strict=True)])
        heat_kw = np.zeros(self.network.size)
        hvac_kw = gains_kw = 0.0
        for i, zone in enumerate(zones):
            direction = self._direction(zone.equipment.kind, heating, i)
            hvac = direction * zone.equipment.cop * power_kw[i]
            gain_w_per_m2 = (
                zone.occupied_gain_w_per_m2 if occupied[i] else zone.unoccupied_gain_w_per_m2
            )
            internal = gain_w_per_m2 * zone.floor_area_m2 / 1000.0
            solar = solar_w_per_m2 * zone.solar_aperture_m2 / 1000.0
            mass = self._mass_node[i]
            to_mass = zone.solar_to_mass_fraction * solar if mass >= 0 else 0.0
            heat_kw[i] += hvac + internal + solar - to_mass
            if mass >= 0:
                heat_kw[mass] += to_mass
            hvac_kw += hvac
            gains_kw += internal + solar
        before_kwh = self.network.stored_kwh(self.state_c)
        result = self.network.step(self.state_c, outdoor_c, heat_kw, hours)
        self.state_c = result.end_c
        record = StepRecord(
            start=self.now,
            duration_s=duration_s,
            outdoor_temperature_c=outdoor_c,
            stages=tuple(int(s) for s in stages),
            power_kw=power_kw,
            occupied=occupied,
            air_end_c=result.end_c[: len(zones)].copy(),
            air_mean_c=result.mean_c[: len(zones)].copy(),
            hvac_heat_kwh=hvac_kw * hours,
            gains_kwh=gains_kw * hours,
            outdoor_gain_kwh=self.network.outdoor_gain_kwh(result.mean_c, outdoor_c, hours),
            stored_change_kwh=self.network.stored_kwh(result.end_c) - before_kwh,
        )
        self._stages = record.stages
        self.now = self.now + timedelta(seconds=duration_s)
        return record

    @staticmethod
    def _direction(kind: EquipmentKind, heating: Sequence[bool] | None, zone: int) -> float:
        if kind is EquipmentKind.HEATING:
            return 1.0
        if kind is EquipmentKind.COOLING:
            return -1.0
        if heating is None:
            raise ValueError("reversible equipment needs a heating/cooling mode per zone")
        return 1.0 if heating[zone] else -1.0
