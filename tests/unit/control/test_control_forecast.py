"""Tariffs, schedules, forecasts, telemetry aggregation and the thermostat."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hvac.control.v1 import resources_pb2

from sim.prices import time_of_use
from svc_control.forecast import OutdoorForecaster, StepTimes, price_forecast
from svc_control.plant import Band, EquipmentKind, EquipmentLimits
from svc_control.schedules import Tariff, WeeklyWindow, office_hours
from svc_control.telemetry import StepAggregator, TelemetrySample, ZoneReading
from svc_control.thermostat import thermostat_stage

PARIS = ZoneInfo("Europe/Paris")
MONDAY_S = datetime(2026, 1, 12, tzinfo=PARIS).timestamp()


def test_a_step_straddling_a_price_change_costs_the_time_weighted_mean() -> None:
    start = datetime(2026, 1, 12, 13, 50, tzinfo=PARIS)  # 10 min mid-peak, 5 min on-peak
    price = time_of_use().mean_price(start, 900.0, PARIS)
    assert price == pytest.approx((10 * 0.084 + 5 * 0.138) / 15)


def test_windows_use_local_wall_clock_time_and_the_proto_day_numbering() -> None:
    window = WeeklyWindow.from_proto(
        resources_pb2.WeeklyWindow(days=[1, 5], start_minute_of_day=420, end_minute_of_day=1140)
    )
    assert window == WeeklyWindow(frozenset({0, 4}), 420, 1140)
    assert window.covers(datetime(2026, 1, 12, 7, 0, tzinfo=PARIS))  # Monday 07:00 Paris
    assert not window.covers(datetime(2026, 1, 12, 6, 59, tzinfo=PARIS))
    assert not window.covers(datetime(2026, 1, 13, 12, 0, tzinfo=PARIS))  # Tuesday
    utc = datetime(2026, 1, 12, 6, 30, tzinfo=UTC)  # 07:30 in Paris
    assert window.covers(utc.astimezone(PARIS))


def test_a_tariff_survives_the_round_trip_through_its_message() -> None:
    tariff = time_of_use()
    assert Tariff.from_proto(tariff.to_proto()) == tariff


def test_outdoor_forecast_repeats_the_daily_profile_and_fades_todays_deviation() -> None:
    step_s = 3600.0
    forecaster = OutdoorForecaster(step_s, bias_decay_h=6.0)

    def profile(t: float) -> float:
        return 5.0 + 4.0 * math.sin(2 * math.pi * t / 86400.0)

    for k in range(48):
        forecaster.observe(k * step_s, profile(k * step_s))
    times = StepTimes.of(48 * step_s, 24, step_s, ZoneInfo("UTC"))
    assert forecaster.forecast(times) == pytest.approx([profile(t) for t in times.start_s])
    forecaster.observe(48 * step_s, profile(48 * step_s) + 3.0)  # today is 3 K warmer
    ahead = StepTimes.of(48 * step_s, 25, step_s, ZoneInfo("UTC"))
    forecast = forecaster.forecast(ahead)
    deviations = [f - profile(t) for f, t in zip(forecast, ahead.start_s, strict=True)]
    assert deviations[0] == pytest.approx(3.0)  # starts from what was just observed
    # Today's deviation from the profile (2 K above the slot's 3-day mean) fades in 6 h ...
    assert deviations[6] == pytest.approx(2.0 * math.exp(-1), rel=1e-9)
    # ... and a day later the slot's mean (which now includes today: +1 K) is what remains.
    assert deviations[24] == pytest.approx(1.0 + 2.0 * math.exp(-24 / 6), rel=1e-9)


def test_outdoor_forecast_without_history_persists_the_latest_value() -> None:
    forecaster = OutdoorForecaster(900.0)
    forecaster.observe(0.0, 7.5)
    assert forecaster.forecast(StepTimes.of(900.0, 4, 900.0, PARIS))[1:] == [7.5] * 3


def test_price_forecast_follows_the_tariff_per_step() -> None:
    times = StepTimes.of(MONDAY_S + 13 * 3600, 8, 900.0, PARIS)
    prices = price_forecast(time_of_use(), times, 900.0, PARIS)
    assert prices == pytest.approx([0.084] * 4 + [0.138] * 4)


def aggregator() -> StepAggregator:
    return StepAggregator(900.0, ["a"], lambda zone, t: True, lambda t: (t / 3600.0) % 24)


def reading(t_s: float, temperature_c: float, power_kw: float) -> TelemetrySample:
    return TelemetrySample(t_s, (ZoneReading("a", temperature_c, None, power_kw),), 4.0)


def test_telemetry_becomes_steps_with_start_temperature_and_mean_power() -> None:
    steps = aggregator()
    assert steps.add(reading(0.0, 20.0, 1.0)) == []
    steps.add(reading(300.0, 20.5, 3.0))
    steps.add(reading(100.0, 99.0, 9.0))  # older than the current step's latest: still counted
    done = steps.add(reading(900.0, 21.0, 0.0))
    assert len(done) == 1
    start_s, by_zone = done[0]
    sample = by_zone["a"]
    assert start_s == 0.0 and sample is not None
    assert sample.temperature_c == 20.0
    assert sample.power_kw == pytest.approx((1.0 + 3.0 + 9.0) / 3)
    assert sample.occupied == 1.0 and sample.outdoor_c == 4.0


def test_a_step_without_telemetry_is_reported_missing_and_late_samples_are_ignored() -> None:
    steps = aggregator()
    steps.add(reading(0.0, 20.0, 1.0))
    done = steps.add(reading(2700.0, 21.0, 0.0))  # steps 1 and 2 had no telemetry
    assert [start for start, _ in done] == [0.0, 900.0, 1800.0]
    assert done[1][1] == {"a": None} and done[2][1] == {"a": None}
    assert steps.add(reading(10.0, 30.0, 5.0)) == []


HEATER = EquipmentLimits(EquipmentKind.HEATING, (0.0, 1.0, 2.0, 3.0))
HEAT_PUMP = EquipmentLimits(EquipmentKind.REVERSIBLE, (0.0, 1.0, 2.0))
OFFICE = Band(21.0, 24.0)


def test_thermostat_adds_a_stage_per_half_kelvin_below_its_target() -> None:
    assert thermostat_stage(21.2, OFFICE, HEATER) == 1
    assert thermostat_stage(20.4, OFFICE, HEATER) == 3
    assert thermostat_stage(15.0, OFFICE, HEATER) == 3
    assert thermostat_stage(22.5, OFFICE, HEATER) == 0


def test_thermostat_keeps_the_lowest_stage_through_its_hysteresis() -> None:
    assert thermostat_stage(21.7, OFFICE, HEATER, previous_stage=2) == 1
    assert thermostat_stage(21.7, OFFICE, HEATER, previous_stage=0) == 0
    assert thermostat_stage(21.9, OFFICE, HEATER, previous_stage=2) == 0


def test_thermostat_cools_with_reversible_equipment_and_rests_without_a_reading() -> None:
    assert thermostat_stage(24.6, OFFICE, HEAT_PUMP) == 2
    assert thermostat_stage(24.6, OFFICE, HEATER) == 0
    assert thermostat_stage(None, OFFICE, HEATER) == 0
    assert thermostat_stage(math.nan, OFFICE, HEATER) == 0


def test_office_hours_are_weekdays_only() -> None:
    hours = office_hours(7, 19)
    assert hours.weekdays == frozenset(range(5))
    assert (hours.start_minute, hours.end_minute) == (420, 1140)
