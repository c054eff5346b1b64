"""Generated scheduling problems: realistic shapes for tests, benchmarks and demos.

Zones are heated rooms with first-order thermal models, a day-night comfort band, time-of-use
prices (off-peak nights, an afternoon peak) and a building cap below the sum of the zones'
highest levels, so the cap binds at times. Same seed, same problem.
"""

from __future__ import annotations

import numpy as np
from google.protobuf import duration_pb2
from hvac.common.v1.common_pb2 import ComfortBand
from hvac.optimizer.v1 import schedule_problem_pb2 as sp


def time_of_use_prices(steps: int, step_hours: float) -> list[float]:
    """Off-peak 0.044, mid 0.084, on-peak (14-18 h) 0.138 per kWh, repeating daily."""
    hours = (np.arange(steps) * step_hours) % 24.0
    prices = np.where(hours < 7, 0.044, 0.084)
    prices = np.where((hours >= 14) & (hours < 18), 0.138, prices)
    prices = np.where(hours >= 22, 0.044, prices)
    return [float(p) for p in prices]


def generated_problem(
    zones: int,
    steps: int,
    seed: int,
    levels: int = 4,
    step_minutes: int = 15,
    cap_fraction: float = 0.7,
    min_on_steps: int = 0,
    min_off_steps: int = 0,
    equally_spaced: bool = True,
) -> sp.ScheduleProblem:
    """A heating problem of `zones` x `steps` with `levels` power levels per zone."""
    rng = np.random.default_rng(seed)
    step_hours = step_minutes / 60.0
    hours = (np.arange(steps) * step_hours) % 24.0
    outdoor = 2.0 + 4.0 * np.sin((hours - 9.0) / 24.0 * 2 * np.pi) + rng.normal(0, 0.5, steps)
    occupied = (hours >= 7) & (hours < 19)
    zone_messages = []
    top_kw = 0.0
    for z in range(zones):
        tau_h = rng.uniform(8.0, 30.0)  # thermal time constant
        a = float(np.exp(-step_hours / tau_h))
        max_kw = float(rng.uniform(2.0, 6.0))
        top_kw += max_kw
        if equally_spaced:
            power = np.linspace(0.0, max_kw, levels)
        else:
            power = np.concatenate([[0.0], np.sort(rng.uniform(0.2, 1.0, levels - 1)) * max_kw])
            power = np.unique(power)
        # Sized for a cold day: full power holds the zone about 40 K above outdoors.
        b = float((1 - a) * 40.0 / max_kw)
        lower = np.where(occupied, 20.0 + rng.uniform(-0.5, 0.5), 16.0)
        upper = np.where(occupied, 24.0, 28.0)
        gains = np.where(occupied, rng.uniform(0.0, 0.05), 0.0) + rng.normal(0, 0.01, steps)
        zone_messages.append(
            sp.ZoneProblem(
                zone_id=f"zone-{z}",
                a=a,
                b_c_per_kw=b,
                c=1 - a,
                initial_temperature_c=float(rng.uniform(19.0, 22.0)),
                comfort=[
                    ComfortBand(lower_c=float(lo), upper_c=float(hi))
                    for lo, hi in zip(lower, upper, strict=True)
                ],
                gain_c=[float(g) for g in np.clip(gains, -10, 10)],
                power_levels_kw=[float(p) for p in power],
                min_on_steps=min_on_steps,
                min_off_steps=min_off_steps,
                switching_penalty=float(rng.uniform(0.0, 0.005)),
            )
        )
    return sp.ScheduleProblem(
        step=duration_pb2.Duration(seconds=step_minutes * 60),
        horizon_steps=steps,
        zones=zone_messages,
        outdoor_temperature_c=[float(t) for t in outdoor],
        price_per_kwh=time_of_use_prices(steps, step_hours),
        peak_power_cap_kw=[round(cap_fraction * top_kw, 3)] * steps,
        discomfort_weight_per_kelvin_hour=1.0,
    )
