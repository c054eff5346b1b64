"""The baseline a conventional building would run: a thermostat on a fixed schedule.

Occupied hours get the occupied band (21-24 °C in the reference office), other hours the setback
band. The stage rule is control's own fallback thermostat (`svc_control.thermostat`), so the
baseline and the fallback differ only in what the controller knows and how often it acts: the
baseline sees the true schedule and acts every time it is called (call it every simulation step,
as a wall thermostat would).
"""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from sim.building import BuildingSpec, EquipmentSpec, Observation
from sim.loop import DeviceCommand
from svc_control.plant import Band, EquipmentLimits
from svc_control.schedules import in_any
from svc_control.thermostat import thermostat_stage


def equipment_limits(unit: EquipmentSpec) -> EquipmentLimits:
    """The limits a unit is registered with (its nameplate stages and minimum times)."""
    return EquipmentLimits(unit.kind, unit.stages_kw, unit.min_on_s, unit.min_off_s)


class BaselineThermostat:
    """A controller for `sim.loop.run_closed_loop`: scheduled setpoints, staged thermostat."""

    def __init__(self, spec: BuildingSpec) -> None:
        self._spec = spec
        self._tz = ZoneInfo(spec.time_zone)
        self._limits = [equipment_limits(z.equipment) for z in spec.zones]

    def __call__(self, observation: Observation) -> Sequence[DeviceCommand]:
        """One command per zone for the moment of `observation`."""
        local = observation.time.astimezone(self._tz)
        commands = []
        for zone, limits, seen in zip(
            self._spec.zones, self._limits, observation.zones, strict=True
        ):
            comfort = zone.comfort
            band = Band(
                *(comfort.occupied if in_any(zone.occupancy, local) else comfort.unoccupied)
            )
            stage = thermostat_stage(seen.temperature_c, band, limits, seen.power_stage)
            commands.append(DeviceCommand(stage, band.lower_c, band.upper_c))
        return commands
