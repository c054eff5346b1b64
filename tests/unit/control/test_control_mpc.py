"""The MPC problem built from what control learnt, plans turned into safe commands, the clock."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from zoneinfo import ZoneInfo

import protovalidate
import pytest
from hvac.optimizer.v1 import schedule_problem_pb2

from sim.devices import registration
from sim.offices import five_zone_office
from sim.prices import time_of_use
from svc_control.clock import ManualClock
from svc_control.controller import BuildingController
from svc_control.envelope import EquipmentState, Override, OverrideKind, Source
from svc_control.identify import StepSample, ThermalModel
from svc_control.mpc import DISTURBANCE_FADE_H, ZoneEstimate, build_problem, plannable_model
from svc_control.plant import BuildingPlant
from svc_control.telemetry import TelemetrySample, ZoneReading

PARIS = ZoneInfo("Europe/Paris")
MONDAY_6H_S = datetime(2026, 1, 12, 6, 0, tzinfo=PARIS).timestamp()
MODEL = ThermalModel(900.0, 0.9, 0.4, 0.07, 0.1, 0.2, 0.03, -0.02, 0.01)


def office_plant(cap_kw: float = 0.0) -> BuildingPlant:
    building, zones = registration(five_zone_office(), "office", time_of_use(), 900, cap_kw)
    return BuildingPlant.from_proto(building, zones)


def estimates(plant: BuildingPlant, stage: int = 0) -> list[ZoneEstimate]:
    state = EquipmentState(stage=stage, last_switch_s=MONDAY_6H_S - 1800.0)
    return [ZoneEstimate(19.0, MODEL, 18.0, state, disturbance_c=0.2) for _ in plant.zones]


def office_problem(cap_kw: float = 0.0, stage: int = 0) -> schedule_problem_pb2.ScheduleProblem:
    plant = office_plant(cap_kw)
    return build_problem(plant, estimates(plant, stage), MONDAY_6H_S, 16, [3.0] * 16, [0.05] * 16)


def test_the_problem_is_valid_under_the_optimizer_contract() -> None:
    problem = office_problem(cap_kw=10.0, stage=2)
    protovalidate.validate(problem)
    assert problem.horizon_steps == 16 and problem.step.seconds == 900
    assert list(problem.peak_power_cap_kw) == [10.0] * 16
    uncapped = office_problem(cap_kw=0.0)
    assert list(uncapped.peak_power_cap_kw) == pytest.approx([16.2] * 16)  # all top stages
    zone = problem.zones[0]
    assert zone.zone_id == "north" and list(zone.power_levels_kw) == [0.0, 0.9, 1.8, 2.7]
    assert (zone.min_on_steps, zone.min_off_steps) == (1, 1)  # 3 and 5 minutes
    assert zone.initial_level_index == 2 and zone.initial_state_steps == 2


def test_the_comfort_band_switches_on_the_step_that_ends_when_occupancy_starts() -> None:
    zone = office_problem().zones[0]
    bands = [(b.lower_c, b.upper_c) for b in zone.comfort]
    # Steps start at 06:00, 06:15, ...: the step 06:45-07:00 ends occupied.
    assert bands[:3] == [(15.0, 30.0)] * 3
    assert bands[3:] == [(21.0, 24.0)] * 13


def test_the_problem_predicts_what_the_identified_model_predicts() -> None:
    problem = office_problem()
    zone = problem.zones[0]
    temperature_c = predicted_c = zone.initial_temperature_c
    for k in range(problem.horizon_steps):
        local = datetime.fromtimestamp(MONDAY_6H_S + 900.0 * k, PARIS)
        sample = StepSample(
            temperature_c,
            1.8,
            problem.outdoor_temperature_c[k],
            1.0 if local.hour >= 7 else 0.0,
            local.hour + local.minute / 60,
        )
        disturbance_c = 0.2 * math.exp(-k * 0.25 / DISTURBANCE_FADE_H)  # 0.25 h per step
        temperature_c = MODEL.next_c(temperature_c, sample, 18.0, disturbance_c)
        predicted_c = (
            zone.a * predicted_c
            + zone.b_c_per_kw * 1.8
            + zone.c * sample.outdoor_c
            + zone.gain_c[k]
        )
        assert predicted_c == pytest.approx(temperature_c, abs=1e-9)


@pytest.mark.parametrize("c", [-0.06, 0.2])  # below 0, and above 1 - a
def test_an_outdoor_weight_out_of_range_is_planned_in_range_with_the_same_predictions(
    c: float,
) -> None:
    model = ThermalModel(900.0, 0.9, 0.4, c, 0.1, 0.2, 0.03, -0.02, 0.01)
    plant = office_plant()
    state = EquipmentState()
    zones = [ZoneEstimate(19.0, model, 18.0, state) for _ in plant.zones]
    outdoor_c = [3.0 + 0.5 * k for k in range(16)]
    problem = build_problem(plant, zones, MONDAY_6H_S, 16, outdoor_c, [0.05] * 16)
    protovalidate.validate(problem)
    zone = problem.zones[0]
    assert 0.0 <= zone.c <= 1.0 - zone.a + 1e-12 and zone.b_c_per_kw == 0.4  # not the prior
    temperature_c = predicted_c = 19.0
    for k in range(16):
        local = datetime.fromtimestamp(MONDAY_6H_S + 900.0 * k, PARIS)
        occupied = 1.0 if local.hour >= 7 else 0.0
        sample = StepSample(
            temperature_c, 0.9, outdoor_c[k], occupied, local.hour + local.minute / 60
        )
        temperature_c = model.next_c(temperature_c, sample, 18.0)
        predicted_c = zone.a * predicted_c + zone.b_c_per_kw * 0.9 + zone.c * outdoor_c[k]
        predicted_c += zone.gain_c[k]
        assert predicted_c == pytest.approx(temperature_c, abs=1e-9)


def test_a_model_the_optimizer_cannot_use_is_replaced_by_the_prior_with_the_right_sign() -> None:
    prior = ThermalModel.prior(900.0)
    wrong_sign = ThermalModel(900.0, 0.9, -0.3, 0.05)
    unstable = ThermalModel(900.0, 1.2, 0.3, 0.05)
    assert plannable_model(wrong_sign, prior, heating=True).b_c_per_kw == prior.b_c_per_kw
    assert plannable_model(unstable, prior, heating=False).b_c_per_kw == -prior.b_c_per_kw
    good = ThermalModel(900.0, 0.9, 0.3, 0.05)
    assert plannable_model(good, prior, heating=True) is good


def schedule_for(
    problem: schedule_problem_pb2.ScheduleProblem, level: int
) -> schedule_problem_pb2.Schedule:
    schedule = schedule_problem_pb2.Schedule()
    for zone in problem.zones:
        schedule.zones.add(zone_id=zone.zone_id, level_index=[level] * problem.horizon_steps)
    return schedule


def warm_controller(plant: BuildingPlant) -> BuildingController:
    controller = BuildingController(plant, horizon_steps=8)
    readings = tuple(ZoneReading(z.zone_id, 20.0, None, 0.0, 0) for z in plant.zones)
    controller.ingest(TelemetrySample(MONDAY_6H_S - 60.0, readings, 2.0))
    return controller


def test_a_plan_becomes_commands_through_the_envelope() -> None:
    controller = warm_controller(office_plant(cap_kw=10.0))
    problem = controller.problem(MONDAY_6H_S)
    protovalidate.validate(problem)
    decision = controller.decide(MONDAY_6H_S, (), problem, schedule_for(problem, 3))
    assert not decision.fallback
    commands = decision.envelope.commands
    assert {c.source for c in commands} == {Source.PLAN}
    assert sum(c.power_kw for c in commands) <= 10.0  # the plan asked for 16.2 kW
    assert decision.envelope.adjustments > 0
    assert all((c.heating_setpoint_c, c.cooling_setpoint_c) == (15.0, 30.0) for c in commands)
    assert controller.states["north"].stage == commands[0].stage
    assert controller.fallbacks == 0 and controller.intervals == 1


def test_a_schedule_that_does_not_fit_the_problem_falls_back_to_the_thermostat() -> None:
    controller = warm_controller(office_plant())
    problem = controller.problem(MONDAY_6H_S)
    schedule = schedule_for(problem, 1)
    del schedule.zones[2]
    decision = controller.decide(MONDAY_6H_S, (), problem, schedule)
    assert decision.fallback and "south" in (decision.fallback_reason or "")
    assert {c.source for c in decision.envelope.commands} == {Source.FALLBACK_THERMOSTAT}
    assert controller.fallbacks == 1


def test_an_operator_override_wins_over_the_plan() -> None:
    controller = warm_controller(office_plant())
    problem = controller.problem(MONDAY_6H_S)
    emergency = Override("e", OverrideKind.EMERGENCY, MONDAY_6H_S - 1, MONDAY_6H_S + 3600)
    decision = controller.decide(MONDAY_6H_S, [emergency], problem, schedule_for(problem, 3))
    assert {c.source for c in decision.envelope.commands} == {Source.EMERGENCY}
    assert {c.stage for c in decision.envelope.commands} == {0}


async def test_a_manual_clock_wakes_sleepers_only_when_their_time_comes() -> None:
    clock = ManualClock(1000.0)
    woke: list[float] = []

    async def sleeper(until_s: float) -> None:
        await clock.sleep_until(until_s)
        woke.append(clock.now_s())

    tasks = [asyncio.create_task(sleeper(t)) for t in (1900.0, 2800.0)]
    await asyncio.sleep(0)
    clock.advance(899.0)
    await asyncio.sleep(0)
    assert woke == []
    clock.advance(1.0)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert woke == [1900.0]
    clock.advance(900.0)
    await asyncio.gather(*tasks)
    assert woke == [1900.0, 2800.0]
