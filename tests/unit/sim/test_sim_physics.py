"""The simulator's physics: exact response, step-length independence, energy balance."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from sim.building import (
    BuildingSimulator,
    BuildingSpec,
    Coupling,
    EquipmentSpec,
    ZoneSpec,
)
from sim.offices import five_zone_office
from sim.weather import ConstantWeather, SyntheticWeather
from svc_control.plant import EquipmentKind

START = datetime(2026, 1, 12, tzinfo=UTC)  # a Monday


def single_zone(
    resistance_k_per_kw: float, capacity_kwh_per_k: float, mass: float = 0.0
) -> ZoneSpec:
    return ZoneSpec(
        zone_id="room",
        floor_area_m2=50.0,
        air_capacity_kwh_per_k=capacity_kwh_per_k,
        mass_capacity_kwh_per_k=mass,
        air_mass_resistance_k_per_kw=0.5,
        envelope_resistance_k_per_kw=resistance_k_per_kw,
        equipment=EquipmentSpec(EquipmentKind.HEATING, (0.0, 1.0, 2.0), cop=2.5),
    )


@pytest.mark.parametrize(
    ("resistance", "capacity", "stage", "step_s"),
    [(8.0, 0.6, 1, 60.0), (3.0, 2.0, 2, 900.0), (20.0, 0.2, 0, 30.0), (1.5, 10.0, 2, 3600.0)],
)
def test_single_zone_matches_the_analytic_exponential_within_1e_6(
    resistance: float, capacity: float, stage: int, step_s: float
) -> None:
    outdoor_c, initial_c = -3.0, 18.0
    spec = BuildingSpec(zones=(single_zone(resistance, capacity),))
    sim = BuildingSimulator(
        spec, ConstantWeather(outdoor_c), START, initial_temperature_c=initial_c
    )
    heat_kw = 2.5 * spec.zones[0].equipment.stages_kw[stage]
    steady_c = outdoor_c + resistance * heat_kw
    tau_h = resistance * capacity
    elapsed_h = 0.0
    for _ in range(40):
        sim.step([stage], step_s)
        elapsed_h += step_s / 3600.0
        analytic_c = steady_c + (initial_c - steady_c) * math.exp(-elapsed_h / tau_h)
        simulated_c = float(sim.air_temperatures_c[0])
        assert abs(simulated_c - analytic_c) <= 1e-6 * abs(analytic_c)


def test_two_node_zone_matches_the_closed_form_double_exponential() -> None:
    # Air node (C1) to outdoors through R0 and to a mass node (C2) through R12; no inputs.
    c1, c2, r0, r12 = 0.5, 6.0, 8.0, 1.2
    zone = single_zone(r0, c1, mass=c2)
    zone = ZoneSpec(**{**zone.__dict__, "air_mass_resistance_k_per_kw": r12})
    sim = BuildingSimulator(BuildingSpec(zones=(zone,)), ConstantWeather(0.0), START, 20.0)
    # d/dt [x1, x2] = A [x1, x2]; eigenvalues of the 2-by-2 matrix by the quadratic formula.
    a11, a12 = -(1 / r0 + 1 / r12) / c1, 1 / (r12 * c1)
    a21, a22 = 1 / (r12 * c2), -1 / (r12 * c2)
    trace, det = a11 + a22, a11 * a22 - a12 * a21
    l1 = trace / 2 + math.sqrt(trace**2 / 4 - det)
    l2 = trace / 2 - math.sqrt(trace**2 / 4 - det)
    # x1(t) = k1 e^{l1 t} + k2 e^{l2 t} with x1(0) = 20 and x1'(0) = a11·20 + a12·20.
    x0, dx0 = 20.0, (a11 + a12) * 20.0
    k1 = (dx0 - l2 * x0) / (l1 - l2)
    k2 = x0 - k1
    for hour in range(1, 25):
        sim.step([0], 3600.0)
        analytic_c = k1 * math.exp(l1 * hour) + k2 * math.exp(l2 * hour)
        assert abs(sim.air_temperatures_c[0] - analytic_c) <= 1e-6 * abs(analytic_c)


def test_the_result_does_not_depend_on_the_step_length() -> None:
    spec = five_zone_office("UTC")
    weather = ConstantWeather(2.0, irradiance_w_per_m2=300.0)
    fine = BuildingSimulator(spec, weather, START, 19.0)
    coarse = BuildingSimulator(spec, weather, START, 19.0)
    stages = [1, 2, 3, 0, 2]
    for _ in range(60):
        fine.step(stages, 60.0)
    coarse.step(stages, 3600.0)
    np.testing.assert_allclose(fine.state_c, coarse.state_c, rtol=1e-9)


def test_energy_balance_closes_over_a_multi_zone_week() -> None:
    spec = five_zone_office("Europe/Paris")
    sim = BuildingSimulator(spec, SyntheticWeather("Europe/Paris", seed=3), START, 20.0)
    rng = np.random.default_rng(7)
    stored_start_kwh = sim.network.stored_kwh(sim.state_c)
    inflow_kwh = throughput_kwh = 0.0
    for _ in range(7 * 24 * 4):
        record = sim.step(list(rng.integers(0, 4, size=5)), 900.0)
        inflow_kwh += record.hvac_heat_kwh + record.gains_kwh + record.outdoor_gain_kwh
        throughput_kwh += record.hvac_heat_kwh + record.gains_kwh + abs(record.outdoor_gain_kwh)
    stored_change_kwh = sim.network.stored_kwh(sim.state_c) - stored_start_kwh
    assert throughput_kwh > 1000.0  # the week moved real heat
    assert abs(inflow_kwh - stored_change_kwh) <= 1e-9 * throughput_kwh


def test_heat_flows_between_coupled_zones_until_they_agree() -> None:
    zone = single_zone(1e9, 1.0)  # practically no loss to outdoors
    spec = BuildingSpec(zones=(zone, ZoneSpec(**{**zone.__dict__, "zone_id": "next"})))
    coupled = BuildingSpec(zones=spec.zones, couplings=(Coupling("room", "next", 0.5),))
    for building, expect_equal in ((spec, False), (coupled, True)):
        sim = BuildingSimulator(building, ConstantWeather(0.0), START, 20.0)
        sim.step([2, 0], 3600.0)  # heat only the first zone for an hour
        sim.step([0, 0], 48 * 3600.0)
        first, second = sim.air_temperatures_c
        assert bool(abs(first - second) < 0.01) is expect_equal
        assert first > 20.0


def test_occupancy_and_sun_warm_an_unheated_office() -> None:
    spec = five_zone_office("UTC")
    sunny = BuildingSimulator(spec, ConstantWeather(10.0, 400.0), START, 18.0)
    dark = BuildingSimulator(spec, ConstantWeather(10.0, 0.0), START, 18.0)
    for _ in range(12):
        sunny.step([0] * 5, 3600.0)
        dark.step([0] * 5, 3600.0)
    gain_c = sunny.air_temperatures_c - dark.air_temperatures_c
    by_zone = dict(zip([z.zone_id for z in spec.zones], gain_c, strict=True))
    assert by_zone["south"] > by_zone["east"] > by_zone["north"] > 0
    assert by_zone["core"] < by_zone["east"]  # no windows: warmed only through its neighbours
    assert sunny.occupied(START + timedelta(hours=9)) == (True,) * 5
    assert sunny.occupied(START + timedelta(hours=22)) == (False,) * 5


def test_bad_stage_is_refused() -> None:
    sim = BuildingSimulator(BuildingSpec(zones=(single_zone(5, 1),)), ConstantWeather(0), START)
    with pytest.raises(ValueError, match="no stage 3"):
        sim.step([3], 60.0)
