"""A closed loop in simulated time: building, edge devices, and any controller.

Every `control_interval_s` the controller gets the latest telemetry and returns one command per
zone (a planned stage and heating/cooling setpoints, as `hvac.control.v1.SetpointCommand`). In
between, every `step_s`, each zone's device runs the planned stage but, as the contract lets a
device do, its own thermostat steps in when the zone leaves [heating, cooling] setpoints, and it
keeps its unit's minimum on and off times. Telemetry is offered to `on_telemetry` every step, as
a device streaming it would. No wall clock is involved: a day runs as fast as the CPU allows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from sim.building import BuildingSimulator, EquipmentSpec, Observation
from sim.kpi import RunLog
from sim.network import Array
from svc_control.plant import EquipmentKind
from svc_control.schedules import Tariff

DEVICE_HYSTERESIS_K = 0.3


@dataclass(frozen=True)
class DeviceCommand:
    """What a device is told for one zone: run `stage` while the zone stays within setpoints."""

    stage: int
    heating_setpoint_c: float
    cooling_setpoint_c: float


Controller = Callable[[Observation], Sequence[DeviceCommand]]


@dataclass
class _DeviceZone:
    stage: int = 0
    last_switch_s: float = -1e18
    guard: int = 0  # +1 heating to recover the heating setpoint, -1 cooling, 0 idle


def _device_stage(
    unit: EquipmentSpec, command: DeviceCommand, temperature_c: float, zone: _DeviceZone, t_s: float
) -> tuple[int, bool]:
    """The stage the device runs this step and whether it heats (the device's own logic)."""
    heating_sp, cooling_sp = command.heating_setpoint_c, command.cooling_setpoint_c
    can_heat, can_cool = unit.kind.can_heat, unit.kind.can_cool
    if zone.guard > 0 and temperature_c >= heating_sp + DEVICE_HYSTERESIS_K:
        zone.guard = 0
    if zone.guard < 0 and temperature_c <= cooling_sp - DEVICE_HYSTERESIS_K:
        zone.guard = 0
    if zone.guard == 0:
        zone.guard = (
            1
            if can_heat and temperature_c < heating_sp
            else -1
            if can_cool and temperature_c > cooling_sp
            else 0
        )
    top = len(unit.stages_kw) - 1
    stage = min(max(command.stage, 0), top)
    if zone.guard != 0:
        stage, heats = max(stage, 1), zone.guard > 0
    else:
        heats = unit.kind is EquipmentKind.HEATING or (
            unit.kind is EquipmentKind.REVERSIBLE
            and temperature_c < (heating_sp + cooling_sp) / 2.0
        )
        # Never push a zone further out of its setpoints than it is.
        if (heats and temperature_c > cooling_sp) or (not heats and temperature_c < heating_sp):
            stage = 0
    since_s = t_s - zone.last_switch_s
    if zone.stage > 0 and stage == 0 and since_s < unit.min_on_s:
        stage = zone.stage
    if zone.stage == 0 and stage > 0 and since_s < unit.min_off_s:
        stage = 0
    if (zone.stage > 0) != (stage > 0):
        zone.last_switch_s = t_s
    zone.stage = stage
    return stage, heats


class ClosedLoop:
    """The building and its devices, advanced interval by interval by whoever holds the commands.

    `run_closed_loop` drives it with a plain function; a driver that gets its commands elsewhere
    (devices streaming to the control service over gRPC) calls `observe`, fetches commands, and
    calls `advance`, in simulated time. `log()` returns what happened so far.
    """

    def __init__(self, sim: BuildingSimulator, tariff: Tariff, step_s: float = 60.0) -> None:
        self.sim = sim
        self.tariff = tariff
        self.step_s = step_s
        self._tz = ZoneInfo(sim.spec.time_zone)
        self._devices = [_DeviceZone() for _ in sim.spec.zones]
        self._elapsed_s = 0.0
        self._mean_c: list[Array] = []
        self._lower_c: list[list[float]] = []
        self._upper_c: list[list[float]] = []
        self._power_kw: list[Array] = []
        self._stages: list[tuple[int, ...]] = []
        self._price: list[float] = []

    def observe(self) -> Observation:
        """Telemetry now."""
        return self.sim.observe()

    def advance(
        self,
        commands: Sequence[DeviceCommand],
        duration_s: float,
        on_telemetry: Callable[[Observation], None] | None = None,
    ) -> None:
        """Let the devices apply `commands` (one per zone) for `duration_s` of simulated time.

        `on_telemetry` receives the telemetry of every step after the first (the caller has the
        first from `observe`).
        """
        zones = self.sim.spec.zones
        if len(commands) != len(zones):
            raise ValueError(f"got {len(commands)} commands for {len(zones)} zones")
        steps = round(duration_s / self.step_s)
        for k in range(steps):
            if k > 0 and on_telemetry is not None:
                on_telemetry(self.sim.observe())
            temperatures = self.sim.air_temperatures_c
            chosen = [
                _device_stage(
                    zone.equipment,
                    commands[i],
                    float(temperatures[i]),
                    self._devices[i],
                    self._elapsed_s,
                )
                for i, zone in enumerate(zones)
            ]
            start = self.sim.now
            record = self.sim.step([s for s, _ in chosen], self.step_s, [h for _, h in chosen])
            self._elapsed_s += self.step_s
            self._mean_c.append(record.air_mean_c)
            self._power_kw.append(record.power_kw)
            self._stages.append(record.stages)
            bands = [
                zone.comfort.occupied if record.occupied[i] else zone.comfort.unoccupied
                for i, zone in enumerate(zones)
            ]
            self._lower_c.append([b[0] for b in bands])
            self._upper_c.append([b[1] for b in bands])
            self._price.append(self.tariff.mean_price(start, self.step_s, self._tz))

    def log(self) -> RunLog:
        """Everything that happened so far, for `sim.kpi.compute_kpis`."""
        zones = self.sim.spec.zones
        width = len(zones)
        return RunLog(
            zone_ids=tuple(z.zone_id for z in zones),
            floor_area_m2=tuple(z.floor_area_m2 for z in zones),
            step_s=self.step_s,
            mean_temperature_c=np.array(self._mean_c).reshape(-1, width),
            lower_c=np.array(self._lower_c, dtype=np.float64).reshape(-1, width),
            upper_c=np.array(self._upper_c, dtype=np.float64).reshape(-1, width),
            power_kw=np.array(self._power_kw).reshape(-1, width),
            stages=np.array(self._stages, dtype=np.int64).reshape(-1, width),
            price_per_kwh=np.array(self._price, dtype=np.float64),
        )


def run_closed_loop(
    sim: BuildingSimulator,
    controller: Controller,
    duration_s: float,
    tariff: Tariff,
    control_interval_s: float = 900.0,
    step_s: float = 60.0,
    on_telemetry: Callable[[Observation], None] | None = None,
) -> RunLog:
    """Run `controller` on `sim` for `duration_s` and return the log the KPIs are computed from."""
    if control_interval_s % step_s != 0:
        raise ValueError("control_interval_s must be a whole number of steps")
    loop = ClosedLoop(sim, tariff, step_s)
    elapsed_s = 0.0
    while elapsed_s < duration_s - 1e-9:
        observation = loop.observe()
        if on_telemetry is not None:
            on_telemetry(observation)
        interval_s = min(control_interval_s, duration_s - elapsed_s)
        loop.advance(controller(observation), interval_s, on_telemetry)
        elapsed_s += interval_s
    return loop.log()
