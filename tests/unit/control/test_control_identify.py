"""Learning zone models: exact recovery, gaps, out-of-sample error, and two simulated days."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from sim.building import BuildingSimulator
from sim.devices import ControlledBuilding, registration
from sim.loop import run_closed_loop
from sim.offices import five_zone_office
from sim.prices import time_of_use
from sim.weather import SyntheticWeather
from svc_control.controller import BuildingController
from svc_control.identify import StepSample, ThermalModel, ZoneIdentifier
from svc_control.plant import BuildingPlant

TRUE_MODEL = ThermalModel(
    step_s=900.0,
    a=0.9,
    b_c_per_kw=0.3,
    c=0.08,
    gain_base_c=0.2,
    gain_occupied_c=0.15,
    gain_sin_c=0.05,
    gain_cos_c=-0.04,
)


def synthetic_samples(count: int, seed: int = 0) -> list[StepSample]:
    """A zone that follows TRUE_MODEL exactly, driven by varied inputs."""
    rng = np.random.default_rng(seed)
    temperature_c = 20.0
    samples = []
    for k in range(count):
        hour = (k * 0.25) % 24
        sample = StepSample(
            temperature_c=temperature_c,
            power_kw=float(rng.choice([0.0, 1.0, 2.0, 3.0])),
            outdoor_c=5.0 + 4.0 * math.sin(2 * math.pi * hour / 24) + float(rng.normal(0, 0.5)),
            occupied=1.0 if 7 <= hour < 19 else 0.0,
            hour_of_day=hour,
        )
        samples.append(sample)
        temperature_c = TRUE_MODEL.next_c(temperature_c, sample, slow_c=0.0)
    return samples


def test_a_zone_that_is_first_order_is_recovered_and_predicted_without_error() -> None:
    identifier = ZoneIdentifier(900.0)
    for sample in synthetic_samples(300):
        identifier.add(sample)
    model = identifier.model
    assert model.a == pytest.approx(TRUE_MODEL.a, abs=1e-3)
    assert model.b_c_per_kw == pytest.approx(TRUE_MODEL.b_c_per_kw, abs=1e-3)
    assert model.c == pytest.approx(TRUE_MODEL.c, abs=1e-3)
    assert model.gain_occupied_c == pytest.approx(TRUE_MODEL.gain_occupied_c, abs=1e-2)
    rmse = identifier.prediction_rmse_k()
    assert rmse is not None and rmse < 0.01


def test_before_any_data_the_prior_is_the_model_and_no_error_is_claimed() -> None:
    prior = ThermalModel.prior(900.0)
    identifier = ZoneIdentifier(900.0, prior=prior)
    assert identifier.model == prior and identifier.prediction_rmse_k() is None
    assert 0 < prior.a < 1 and prior.c == pytest.approx(1 - prior.a)


def test_a_missing_step_is_never_regressed_across() -> None:
    samples = synthetic_samples(10)
    identifier = ZoneIdentifier(900.0)
    for sample in samples[:5]:
        identifier.add(sample)
    identifier.add(None)
    for sample in samples[6:]:
        identifier.add(sample)
    # 10 samples with one missing: pairs (0,1)..(3,4) and (6,7)..(8,9), none spanning the gap.
    assert identifier.samples == 4 + 3


def test_the_hour_ahead_error_is_measured_with_the_model_of_an_hour_before() -> None:
    # A sudden change of the zone's behaviour shows up as error before the model re-learns it.
    identifier = ZoneIdentifier(900.0, window_steps=96)
    samples = synthetic_samples(200)
    for sample in samples:
        identifier.add(sample)
    settled = identifier.prediction_rmse_k()
    assert settled is not None and settled < 0.01
    shifted = [
        StepSample(s.temperature_c + 0.5 * (k % 2), s.power_kw, s.outdoor_c, 0.0, s.hour_of_day)
        for k, s in enumerate(synthetic_samples(8, seed=1))
    ]
    for sample in shifted:
        identifier.add(sample)
    disturbed = identifier.prediction_rmse_k()
    assert disturbed is not None and disturbed > settled


def test_after_two_simulated_days_the_hour_ahead_error_is_under_0_3_kelvin() -> None:
    spec = five_zone_office()
    building, zones = registration(spec, "office", time_of_use())
    controlled = ControlledBuilding(BuildingController(BuildingPlant.from_proto(building, zones)))
    sim = BuildingSimulator(
        spec,
        SyntheticWeather("Europe/Paris", seed=2),
        datetime(2026, 1, 12, tzinfo=ZoneInfo("Europe/Paris")),
        initial_temperature_c=18.0,
        sensor_noise_sd_k=0.05,
        seed=2,
    )
    run_closed_loop(
        sim, controlled, 2 * 86400.0, time_of_use(), on_telemetry=controlled.on_telemetry
    )
    for zone_id, identifier in controlled.controller.identifiers.items():
        rmse = identifier.prediction_rmse_k()
        assert identifier.samples >= 180, zone_id
        assert rmse is not None and rmse < 0.3, (zone_id, rmse)
