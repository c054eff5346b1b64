"""The simulated building as the control service meets it: registration, telemetry, commands.

- `registration` gives the `Building` and `Zone` messages an operator would register: floor
  areas, comfort schedules, safe bands, equipment stages and limits, tariff. Never the thermal
  parameters, which control must learn.
- `telemetry` turns an observation into what a device streams; `ControlledBuilding` closes the
  loop between the simulator and a `BuildingController` (pure, no network), optionally with a
  solver standing where the optimizer service will stand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from google.protobuf.duration_pb2 import Duration
from hvac.common.v1 import common_pb2
from hvac.control.v1 import resources_pb2
from hvac.optimizer.v1 import schedule_problem_pb2

from sim.building import BuildingSpec, Observation
from sim.loop import DeviceCommand
from svc_control.controller import BuildingController, Decision
from svc_control.envelope import Override
from svc_control.schedules import Tariff
from svc_control.telemetry import TelemetrySample, ZoneReading

SAFE_BAND_C = (10.0, 32.0)

Solver = Callable[[schedule_problem_pb2.ScheduleProblem], schedule_problem_pb2.Schedule | None]


def registration(
    spec: BuildingSpec,
    building_id: str,
    tariff: Tariff,
    control_interval_s: int = 900,
    peak_power_cap_kw: float = 0.0,
) -> tuple[resources_pb2.Building, list[resources_pb2.Zone]]:
    """The registry entries of the simulated building (what its operator knows)."""
    building = resources_pb2.Building(
        building_id=building_id,
        home_region=common_pb2.REGION_EU_WEST,
        floor_area_m2=spec.floor_area_m2,
        time_zone=spec.time_zone,
        tariff=tariff.to_proto(),
        peak_power_cap_kw=peak_power_cap_kw,
        control_interval=Duration(seconds=control_interval_s),
    )
    zones = []
    for zone in spec.zones:
        occupied, unoccupied = zone.comfort.occupied, zone.comfort.unoccupied
        unit = zone.equipment
        zones.append(
            resources_pb2.Zone(
                building_id=building_id,
                zone_id=zone.zone_id,
                floor_area_m2=zone.floor_area_m2,
                comfort=resources_pb2.ComfortSchedule(
                    occupied=common_pb2.ComfortBand(lower_c=occupied[0], upper_c=occupied[1]),
                    unoccupied=common_pb2.ComfortBand(lower_c=unoccupied[0], upper_c=unoccupied[1]),
                ),
                occupancy_schedule=[
                    resources_pb2.WeeklyWindow(
                        days=sorted(d + 1 for d in w.weekdays),
                        start_minute_of_day=w.start_minute,
                        end_minute_of_day=w.end_minute,
                    )
                    for w in zone.occupancy
                ],
                safe_band=resources_pb2.SafeBand(min_c=SAFE_BAND_C[0], max_c=SAFE_BAND_C[1]),
                equipment=resources_pb2.Equipment(
                    kind=resources_pb2.EquipmentKind.ValueType(int(unit.kind)),
                    power_stages_kw=list(unit.stages_kw),
                    min_on_duration=Duration(seconds=round(unit.min_on_s)),
                    min_off_duration=Duration(seconds=round(unit.min_off_s)),
                    max_cycles_per_hour=6,
                ),
            )
        )
    return building, zones


def telemetry(observation: Observation) -> TelemetrySample:
    """The sample a device would stream for `observation`."""
    return TelemetrySample(
        time_s=observation.time.timestamp(),
        outdoor_temperature_c=observation.outdoor_temperature_c,
        readings=tuple(
            ZoneReading(z.zone_id, z.temperature_c, z.occupied, z.power_kw, z.power_stage)
            for z in observation.zones
        ),
    )


def device_commands(decision: Decision) -> list[DeviceCommand]:
    """What each zone's device is told by a decision."""
    return [
        DeviceCommand(c.stage, c.heating_setpoint_c, c.cooling_setpoint_c)
        for c in decision.envelope.commands
    ]


class ControlledBuilding:
    """A `sim.loop` controller backed by control's `BuildingController`.

    Pass `on_telemetry` to `run_closed_loop` as the device stream. With no `solver` every
    interval falls back to the thermostat, as when the optimizer is stopped.
    """

    def __init__(
        self,
        controller: BuildingController,
        solver: Solver | None = None,
        overrides: Sequence[Override] = (),
    ) -> None:
        self.controller = controller
        self.solver = solver
        self.overrides = overrides
        self.decisions: list[Decision] = []

    def on_telemetry(self, observation: Observation) -> None:
        """Stream one observation into the controller."""
        self.controller.ingest(telemetry(observation))

    def __call__(self, observation: Observation) -> Sequence[DeviceCommand]:
        """Decide the interval starting at the observation's time."""
        now_s = observation.time.timestamp()
        problem = schedule = None
        reason = "optimizer stopped"
        if self.solver is not None:
            problem = self.controller.problem(now_s)
            schedule = self.solver(problem)
            reason = "optimizer returned no schedule"
        decision = self.controller.decide(now_s, self.overrides, problem, schedule, reason)
        self.decisions.append(decision)
        return device_commands(decision)
