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
    zones = sim.spec.zones
    steps = round(duration_s / step_s)
    per_interval = round(control_interval_s / step_s)
    local_tz = ZoneInfo(sim.spec.time_zone)
    devices = [_DeviceZone() for _ in zones]
    mean_c = np.zeros((steps, len(zones)))
    lower_c, upper_c, power_kw = np.zeros_like(mean_c), np.zeros_like(mean_c), np.zeros_like(mean_c)
    stages = np.zeros((steps, len(zones)), dtype=np.int64)
    price = np.zeros(steps)
    commands: Sequence[DeviceCommand] = ()
    for k in range(steps):
        observation = sim.observe()
        if on_telemetry is not None:
            on_telemetry(observation)
        if k % per_interval == 0:
            commands = controller(observation)
            if len(commands) != len(zones):
                raise ValueError(f"controller returned {len(commands)} commands for {len(zones)}")
        t_s = k * step_s
        temperatures = sim.air_temperatures_c
        chosen = [
            _device_stage(zone.equipment, commands[i], float(temperatures[i]), devices[i], t_s)
            for i, zone in enumerate(zones)
        ]
        start = sim.now
        record = sim.step([s for s, _ in chosen], step_s, [h for _, h in chosen])
        mean_c[k] = record.air_mean_c
        power_kw[k] = record.power_kw
        stages[k] = record.stages
        for i, zone in enumerate(zones):
            band = zone.comfort.occupied if record.occupied[i] else zone.comfort.unoccupied
            lower_c[k, i], upper_c[k, i] = band
        price[k] = tariff.mean_price(start, step_s, local_tz)
    return RunLog(
        zone_ids=tuple(z.zone_id for z in zones),
        floor_area_m2=tuple(z.floor_area_m2 for z in zones),
        step_s=step_s,
        mean_temperature_c=mean_c,
        lower_c=lower_c,
        upper_c=upper_c,
        power_kw=power_kw,
        stages=stages,
        price_per_kwh=price,
    )
