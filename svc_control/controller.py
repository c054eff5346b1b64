"""One building's control loop, without the I/O: learn, plan, fall back, stay safe.

`BuildingController` is what the service runs per building each control interval:

1. `ingest` every telemetry sample: it is aggregated into control steps, which refresh each
   zone's identified model and the outdoor forecaster.
2. `problem(now_s)` builds the `ScheduleProblem` for the optimizer from the state estimate.
3. `decide(now_s, ...)` takes the optimizer's `Schedule` (or None when the optimizer failed, is
   unreachable or late) and returns the commands to send: from the plan, or from the fallback
   thermostat, always through the safety envelope, with operator overrides winning.

The controller never sees the building's true parameters, only telemetry. Its equipment states
are the envelope's memory; a service persisting them restores them with `states`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hvac.optimizer.v1 import schedule_problem_pb2

from svc_control.envelope import (
    EnvelopeResult,
    EquipmentState,
    Override,
    Proposal,
    Source,
    ZoneInput,
    apply_envelope,
)
from svc_control.forecast import (
    OutdoorForecaster,
    StepTimes,
    local_hour,
    local_time,
    price_forecast,
)
from svc_control.identify import ZoneIdentifier
from svc_control.mpc import (
    DEFAULT_WEIGHTS,
    ScheduleMismatch,
    Weights,
    ZoneEstimate,
    build_problem,
    proposals_from_schedule,
)
from svc_control.plant import BuildingPlant
from svc_control.telemetry import StepAggregator, TelemetrySample
from svc_control.thermostat import thermostat_stage


@dataclass(frozen=True)
class Decision:
    """The outcome of one control interval."""

    time_s: float
    envelope: EnvelopeResult
    fallback_reason: str | None  # None: the optimizer's plan was used

    @property
    def fallback(self) -> bool:
        """Whether the rule-based thermostat planned this interval."""
        return self.fallback_reason is not None


class BuildingController:
    """Learns one building from telemetry and decides its commands each interval."""

    def __init__(
        self,
        plant: BuildingPlant,
        horizon_steps: int = 96,
        weights: Weights = DEFAULT_WEIGHTS,
        states: Mapping[str, EquipmentState] | None = None,
    ) -> None:
        self.plant = plant
        self.horizon_steps = horizon_steps
        self.weights = weights
        step_s = plant.control_interval_s
        zones = {z.zone_id: z for z in plant.zones}
        self.identifiers = {z: ZoneIdentifier(step_s) for z in zones}
        self.outdoor = OutdoorForecaster(step_s)
        self.states = {z: (states or {}).get(z, EquipmentState()) for z in zones}
        self.intervals = 0
        self.fallbacks = 0
        self._aggregator = StepAggregator(
            step_s,
            list(zones),
            lambda zone_id, t: zones[zone_id].scheduled_occupied(local_time(t, plant.time_zone)),
            lambda t: local_hour(t, plant.time_zone),
        )

    def ingest(self, sample: TelemetrySample) -> None:
        """Take one telemetry sample (in time order; older duplicates are ignored)."""
        for start_s, steps in self._aggregator.add(sample):
            outdoor = [s.outdoor_c for s in steps.values() if s is not None]
            if outdoor:
                self.outdoor.observe(start_s, outdoor[0])
            for zone_id, step in steps.items():
                self.identifiers[zone_id].add(step)

    def temperature_c(self, zone_id: str) -> float | None:
        """The zone's latest measured temperature, if any."""
        reading = self._aggregator.latest.get(zone_id)
        return None if reading is None else reading.temperature_c

    def estimates(self) -> list[ZoneEstimate]:
        """The state estimate of every zone (zones without readings get their band's middle)."""
        result = []
        for zone in self.plant.zones:
            identifier = self.identifiers[zone.zone_id]
            measured = self.temperature_c(zone.zone_id)
            band = zone.occupied_band
            temperature_c = (band.lower_c + band.upper_c) / 2.0 if measured is None else measured
            slow_c = identifier.slow_temperature_c
            result.append(
                ZoneEstimate(
                    temperature_c=temperature_c,
                    model=identifier.model,
                    slow_c=temperature_c if slow_c is None else slow_c,
                    equipment=self.states[zone.zone_id],
                    disturbance_c=identifier.disturbance_c,
                )
            )
        return result

    def problem(self, now_s: float) -> schedule_problem_pb2.ScheduleProblem:
        """The optimizer's problem for the horizon starting now."""
        step_s = self.plant.control_interval_s
        times = StepTimes.of(now_s, self.horizon_steps, step_s, self.plant.time_zone)
        return build_problem(
            self.plant,
            self.estimates(),
            now_s,
            self.horizon_steps,
            self.outdoor.forecast(times),
            price_forecast(self.plant.tariff, times, step_s, self.plant.time_zone),
            self.weights,
        )

    def decide(
        self,
        now_s: float,
        overrides: Sequence[Override] = (),
        problem: schedule_problem_pb2.ScheduleProblem | None = None,
        schedule: schedule_problem_pb2.Schedule | None = None,
        fallback_reason: str = "optimizer unavailable",
    ) -> Decision:
        """The commands of the interval starting at `now_s`, and the new equipment states.

        With `problem` and its `schedule`, the plan's first step is proposed; otherwise (or if
        the schedule does not fit the problem) the fallback thermostat proposes, and the
        interval counts as a fallback with `fallback_reason`.
        """
        proposals: list[Proposal] | None = None
        reason: str | None = fallback_reason
        if problem is not None and schedule is not None:
            try:
                proposals = proposals_from_schedule(self.plant, problem, schedule)
                reason = None
            except ScheduleMismatch as error:
                reason = str(error)
        if proposals is None:
            proposals = self.fallback_proposals(now_s)
        zones = [
            ZoneInput(zone, self.states[zone.zone_id], self.temperature_c(zone.zone_id), p)
            for zone, p in zip(self.plant.zones, proposals, strict=True)
        ]
        result = apply_envelope(zones, overrides, now_s, self.plant.peak_power_cap_kw)
        self.states = {z.plant.zone_id: s for z, s in zip(zones, result.states, strict=True)}
        self.intervals += 1
        self.fallbacks += reason is not None
        return Decision(now_s, result, reason)

    def fallback_proposals(self, now_s: float) -> list[Proposal]:
        """The thermostat's proposal per zone, judged against the band at the interval's end.

        Looking one interval ahead lets the fallback start heating before occupancy begins,
        since its command holds for the whole interval.
        """
        tz, step_s = self.plant.time_zone, self.plant.control_interval_s
        proposals = []
        for zone in self.plant.zones:
            now_band = zone.comfort_band(local_time(now_s, tz))
            next_band = zone.comfort_band(local_time(now_s + step_s, tz))
            band = next_band if next_band == zone.occupied_band else now_band
            stage = thermostat_stage(
                self.temperature_c(zone.zone_id),
                band,
                zone.equipment,
                self.states[zone.zone_id].stage,
            )
            proposals.append(
                Proposal(stage, band.lower_c, band.upper_c, Source.FALLBACK_THERMOSTAT)
            )
        return proposals
