"""KPIs, registration, and closed-loop days with the baseline and with control's fallback."""

from __future__ import annotations

import ast
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import protovalidate
import pytest

from sim.baseline import BaselineThermostat
from sim.building import BuildingSimulator
from sim.devices import ControlledBuilding, registration
from sim.kpi import Kpis, RunLog, compute_kpis
from sim.loop import ClosedLoop, run_closed_loop
from sim.offices import five_zone_office
from sim.prices import price_profile, time_of_use
from sim.weather import SyntheticWeather
from svc_control.controller import BuildingController
from svc_control.envelope import Source
from svc_control.plant import BuildingPlant

PARIS = ZoneInfo("Europe/Paris")
MONDAY = datetime(2026, 1, 12, tzinfo=PARIS)
DAY_S = 86400.0


def test_kpis_of_a_hand_made_run() -> None:
    # Two zones (10 and 30 m²), four 15-minute steps.
    log = RunLog(
        zone_ids=("a", "b"),
        floor_area_m2=(10.0, 30.0),
        step_s=900.0,
        mean_temperature_c=np.array([[20.0, 22.0], [21.0, 25.0], [22.0, 22.0], [19.0, 22.0]]),
        lower_c=np.full((4, 2), 21.0),
        upper_c=np.full((4, 2), 24.0),
        power_kw=np.array([[2.0, 0.0], [2.0, 4.0], [0.0, 4.0], [2.0, 0.0]]),
        stages=np.array([[1, 0], [1, 2], [0, 2], [1, 0]]),
        price_per_kwh=np.array([0.1, 0.1, 0.2, 0.2]),
    )
    kpis = compute_kpis(log, peak_window_s=1800.0)
    assert kpis.hours == 1.0
    # a: 1 K + 2 K below for one quarter hour each; b: 1 K above for one quarter hour.
    assert kpis.discomfort_kelvin_hours_by_zone == {"a": 0.75, "b": 0.25}
    assert kpis.discomfort_kelvin_hours_per_zone == 0.5
    assert kpis.energy_kwh_per_m2 == pytest.approx((14.0 * 0.25) / 40.0)
    assert kpis.cost_per_m2 == pytest.approx((2 * 0.1 + 6 * 0.1 + 4 * 0.2 + 2 * 0.2) * 0.25 / 40)
    assert kpis.peak_power_kw_per_m2 == pytest.approx(4.0 / 40.0)  # (2 + 6) / 2 kW, first half hour
    assert kpis.cycles_per_hour_max == 2.0  # zone a starts at step 0 and again at step 3
    assert kpis.cycles_per_hour_mean == 1.5


def test_time_of_use_prices_follow_the_weekday_periods() -> None:
    prices = price_profile(time_of_use(), MONDAY, 24, 3600.0, "Europe/Paris")
    expected = [0.044] * 8 + [0.084] * 6 + [0.138] * 4 + [0.084] * 3 + [0.044] * 3
    assert prices == pytest.approx(expected, rel=1e-12)
    saturday = price_profile(time_of_use(), MONDAY.replace(day=17), 24, 3600.0, "Europe/Paris")
    assert saturday == pytest.approx([0.044] * 24, rel=1e-12)


def test_registration_passes_the_contract_rules_and_hides_the_physics() -> None:
    building, zones = registration(five_zone_office(), "office", time_of_use())
    protovalidate.validate(building)
    for zone in zones:
        protovalidate.validate(zone)
    plant = BuildingPlant.from_proto(building, zones)
    assert [z.zone_id for z in plant.zones] == ["north", "east", "south", "west", "core"]
    assert plant.tariff == time_of_use()
    text = str(building) + "".join(str(z) for z in zones)
    assert "capacity" not in text and "resistance" not in text


def run_day(controller: BaselineThermostat | ControlledBuilding, interval_s: float) -> Kpis:
    spec = five_zone_office()
    weather = SyntheticWeather("Europe/Paris", seed=1)
    sim = BuildingSimulator(spec, weather, MONDAY, initial_temperature_c=18.0)
    telemetry = controller.on_telemetry if isinstance(controller, ControlledBuilding) else None
    log = run_closed_loop(sim, controller, DAY_S, time_of_use(), interval_s, 60.0, telemetry)
    return compute_kpis(log)


def test_fallback_thermostat_alone_keeps_a_day_within_1_kelvin_hour_per_zone_of_baseline() -> None:
    baseline = run_day(BaselineThermostat(five_zone_office()), 60.0)
    building, zones = registration(five_zone_office(), "office", time_of_use())
    fallback_only = ControlledBuilding(
        BuildingController(BuildingPlant.from_proto(building, zones))
    )
    fallback = run_day(fallback_only, 900.0)
    for zone_id, kelvin_hours in fallback.discomfort_kelvin_hours_by_zone.items():
        assert kelvin_hours <= baseline.discomfort_kelvin_hours_by_zone[zone_id] + 1.0
    assert fallback.energy_kwh_per_m2 > 0.01  # the building was really heated
    assert fallback.cycles_per_hour_max <= 6.0
    decisions = fallback_only.decisions
    assert len(decisions) == 96 and all(d.fallback_reason == "optimizer stopped" for d in decisions)
    assert fallback_only.controller.fallbacks == fallback_only.controller.intervals == 96
    sources = {c.source for d in decisions for c in d.envelope.commands}
    assert sources == {Source.FALLBACK_THERMOSTAT}


def test_control_never_imports_the_simulator() -> None:
    # The simulator's parameters are ground truth; control may learn them only from telemetry.
    package = Path(__file__).resolve().parents[3] / "svc_control"
    for module in package.rglob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n == "sim" or n.startswith("sim.") for n in names), module


def test_driving_the_loop_interval_by_interval_gives_the_same_run() -> None:
    spec = five_zone_office()
    controller = BaselineThermostat(spec)

    def simulator() -> BuildingSimulator:
        return BuildingSimulator(spec, SyntheticWeather("Europe/Paris", seed=4), MONDAY, 17.0)

    whole = run_closed_loop(simulator(), controller, 4 * 3600.0, time_of_use(), 900.0)
    loop = ClosedLoop(simulator(), time_of_use())
    for _ in range(16):
        loop.advance(controller(loop.observe()), 900.0)
    stepped = loop.log()
    np.testing.assert_array_equal(stepped.mean_temperature_c, whole.mean_temperature_c)
    np.testing.assert_array_equal(stepped.stages, whole.stages)
    assert stepped.power_kw.shape == (240, 5) and stepped.power_kw.sum() > 0
    with pytest.raises(ValueError, match="2 commands for 5 zones"):
        loop.advance(controller(loop.observe())[:2], 900.0)
