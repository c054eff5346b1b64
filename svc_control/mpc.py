"""Model-predictive control, the pure parts: the problem to solve, and what to do with a plan.

`build_problem` turns a building's state estimate, identified models and forecasts into the
optimizer's `ScheduleProblem`; `proposals_from_schedule` turns the optimizer's `Schedule` into
one proposal per zone for the current step, which the safety envelope then makes safe. No I/O.

Model projection: the optimizer accepts 0 < a ≤ 1, 0 ≤ c ≤ 1 and a gain per step within ±10 K,
and needs b of the right sign for the equipment (heating warms, cooling cools). An outdoor
weight outside [0, 1 - a] is moved into it, the difference going into the gains (the same
predictions). An identified model with a or b outside that (too little or too flat data) is
replaced by the zone's prior, with the sign set by the equipment's mode; reversible equipment
plans heating when the outdoor forecast is below the occupied band's middle, cooling otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.duration_pb2 import Duration
from hvac.common.v1 import common_pb2
from hvac.optimizer.v1 import schedule_problem_pb2

from svc_control.envelope import EquipmentState, Proposal, Source
from svc_control.forecast import StepTimes, gain_forecast, local_time, occupancy_forecast
from svc_control.identify import ThermalModel
from svc_control.plant import Band, BuildingPlant, EquipmentKind, ZonePlant

MAX_STATE_STEPS = 10_000
# How fast an estimated unmeasured gain is assumed to fade over the horizon.
DISTURBANCE_FADE_H = 2.0


@dataclass(frozen=True)
class ZoneEstimate:
    """What control believes about a zone now."""

    temperature_c: float
    model: ThermalModel
    slow_c: float
    equipment: EquipmentState
    disturbance_c: float = 0.0


@dataclass(frozen=True)
class Weights:
    """Prices of the soft objectives, in the tariff's currency."""

    discomfort_per_kelvin_hour: float = 2.0
    switching_penalty: float = 0.01


DEFAULT_WEIGHTS = Weights()


class ScheduleMismatch(ValueError):
    """The optimizer's schedule does not fit the problem (zones or steps missing)."""


def heats(zone: ZonePlant, outdoor_c: Sequence[float]) -> bool:
    """Whether the zone's equipment is planned as heating over this horizon."""
    kind = zone.equipment.kind
    if kind is not EquipmentKind.REVERSIBLE:
        return kind is EquipmentKind.HEATING
    middle_c = (zone.occupied_band.lower_c + zone.occupied_band.upper_c) / 2.0
    return sum(outdoor_c) / max(1, len(outdoor_c)) < middle_c


def plannable_model(model: ThermalModel, prior: ThermalModel, heating: bool) -> ThermalModel:
    """`model` if the optimizer can use it for equipment of this direction, else `prior`.

    An outdoor weight `c` outside [0, 1 - a] does not disqualify a model: `build_problem` plans
    with it moved into that range and the difference times the outdoor forecast added to the
    gains, which predicts exactly the same temperatures. (Discarding such a model for the prior,
    whose response to heating is far off, made the planner heat all night.)"""
    usable = (
        0.0 < model.a <= 1.0
        and math.isfinite(model.c)
        and 0.0 < abs(model.b_c_per_kw) <= 5.0
        and (model.b_c_per_kw > 0) == heating
    )
    if usable:
        return model
    magnitude = min(5.0, abs(prior.b_c_per_kw))
    return ThermalModel(prior.step_s, prior.a, magnitude if heating else -magnitude, prior.c)


def comfort_bands(
    zone: ZonePlant, times: StepTimes, step_s: float, plant: BuildingPlant
) -> list[Band]:
    """The band each step's end temperature is judged against (occupancy at the step's end)."""
    return [zone.comfort_band(local_time(t + step_s, plant.time_zone)) for t in times.start_s]


def build_problem(
    plant: BuildingPlant,
    estimates: Sequence[ZoneEstimate],
    start_s: float,
    horizon_steps: int,
    outdoor_c: Sequence[float],
    price_per_kwh: Sequence[float],
    weights: Weights = DEFAULT_WEIGHTS,
    priors: Sequence[ThermalModel] | None = None,
) -> schedule_problem_pb2.ScheduleProblem:
    """The `ScheduleProblem` of the horizon starting at `start_s` (zones in plant order)."""
    step_s = plant.control_interval_s
    if len(estimates) != len(plant.zones):
        raise ValueError("one estimate per zone")
    if len(outdoor_c) != horizon_steps or len(price_per_kwh) != horizon_steps:
        raise ValueError("forecasts must have one entry per step")
    times = StepTimes.of(start_s, horizon_steps, step_s, plant.time_zone)
    problem = schedule_problem_pb2.ScheduleProblem(
        step=Duration(seconds=round(step_s)),
        horizon_steps=horizon_steps,
        outdoor_temperature_c=[min(60.0, max(-60.0, v)) for v in outdoor_c],
        price_per_kwh=[min(100.0, max(-10.0, v)) for v in price_per_kwh],
        discomfort_weight_per_kelvin_hour=weights.discomfort_per_kelvin_hour,
    )
    top_kw = sum(z.equipment.stages_kw[-1] for z in plant.zones)
    cap_kw = top_kw if plant.peak_power_cap_kw is None else min(top_kw, plant.peak_power_cap_kw)
    problem.peak_power_cap_kw.extend([cap_kw] * horizon_steps)
    for i, (zone, estimate) in enumerate(zip(plant.zones, estimates, strict=True)):
        prior = priors[i] if priors is not None else ThermalModel.prior(step_s)
        model = plannable_model(estimate.model, prior, heats(zone, outdoor_c))
        occupancy = occupancy_forecast(zone, times, plant.time_zone)
        c_planned = min(max(model.c, 0.0), 1.0 - model.a)
        outdoor_excess = model.c - c_planned
        gains = [
            g
            + outdoor_excess * problem.outdoor_temperature_c[k]
            + estimate.disturbance_c * math.exp(-k * step_s / 3600.0 / DISTURBANCE_FADE_H)
            for k, g in enumerate(gain_forecast(model, occupancy, times, estimate.slow_c))
        ]
        limits = zone.equipment
        zone_problem = problem.zones.add(
            zone_id=zone.zone_id,
            a=model.a,
            b_c_per_kw=model.b_c_per_kw,
            c=c_planned,
            initial_temperature_c=min(50.0, max(-30.0, estimate.temperature_c)),
            gain_c=[min(10.0, max(-10.0, g)) for g in gains],
            power_levels_kw=list(limits.stages_kw),
            min_on_steps=min(672, math.ceil(limits.min_on_s / step_s)),
            min_off_steps=min(672, math.ceil(limits.min_off_s / step_s)),
            switching_penalty=weights.switching_penalty,
        )
        for band in comfort_bands(zone, times, step_s, plant):
            zone_problem.comfort.append(
                common_pb2.ComfortBand(lower_c=band.lower_c, upper_c=band.upper_c)
            )
        state = estimate.equipment
        zone_problem.initial_level_index = min(max(state.stage, 0), limits.top_stage)
        if state.last_switch_s is not None:
            elapsed = max(0.0, start_s - state.last_switch_s) / step_s
            zone_problem.initial_state_steps = min(MAX_STATE_STEPS, math.floor(elapsed))
    return problem


def proposals_from_schedule(
    plant: BuildingPlant,
    problem: schedule_problem_pb2.ScheduleProblem,
    schedule: schedule_problem_pb2.Schedule,
) -> list[Proposal]:
    """The first step of each zone's schedule, with the step's comfort band as setpoints.

    Raises `ScheduleMismatch` when a zone is missing or has no first step; stage indices are not
    checked here (the envelope clamps them).
    """
    by_zone = {z.zone_id: z for z in schedule.zones}
    proposals = []
    for zone, zone_problem in zip(plant.zones, problem.zones, strict=True):
        planned = by_zone.get(zone.zone_id)
        if planned is None or not planned.level_index:
            raise ScheduleMismatch(f"the schedule has no first step for zone {zone.zone_id}")
        band = zone_problem.comfort[0]
        proposals.append(Proposal(planned.level_index[0], band.lower_c, band.upper_c, Source.PLAN))
    return proposals
