"""The key performance indicators of any run, as the BOPTEST benchmark reports them.

One module computes them for every controller (baseline, fallback, MPC), from a `RunLog`:

- thermal discomfort: K·h outside the comfort band, per zone (`tdis_tot` is the mean over zones);
  the deviation of each step's mean air temperature times the step length;
- energy: electrical kWh per m² of floor;
- cost: currency units per m², each step's energy at its price;
- peak power: highest building demand averaged over `peak_window_s` (15 min, as billed), kW/m²;
- equipment cycles per hour: off-to-on transitions of each zone per hour of run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sim.network import Array


@dataclass(frozen=True)
class RunLog:
    """A run sampled every `step_s`; 2-D arrays are (steps, zones)."""

    zone_ids: tuple[str, ...]
    floor_area_m2: tuple[float, ...]
    step_s: float
    mean_temperature_c: Array
    lower_c: Array
    upper_c: Array
    power_kw: Array
    stages: npt.NDArray[np.int64]
    price_per_kwh: Array


@dataclass(frozen=True)
class Kpis:
    """The figures of one run."""

    hours: float
    discomfort_kelvin_hours_per_zone: float
    discomfort_kelvin_hours_by_zone: dict[str, float]
    energy_kwh_per_m2: float
    cost_per_m2: float
    peak_power_kw_per_m2: float
    cycles_per_hour_max: float
    cycles_per_hour_mean: float


def compute_kpis(log: RunLog, peak_window_s: float = 900.0) -> Kpis:
    """The KPIs of `log` (see the module docstring for each definition)."""
    steps, zones = log.power_kw.shape
    if steps == 0:
        raise ValueError("an empty run has no KPIs")
    step_h = log.step_s / 3600.0
    hours = steps * step_h
    too_cold = np.maximum(0.0, log.lower_c - log.mean_temperature_c)
    too_warm = np.maximum(0.0, log.mean_temperature_c - log.upper_c)
    discomfort = (too_cold + too_warm).sum(axis=0) * step_h
    area_m2 = float(sum(log.floor_area_m2))
    building_kw = log.power_kw.sum(axis=1)
    energy_kwh = float(building_kw.sum() * step_h)
    cost = float((building_kw * log.price_per_kwh).sum() * step_h)
    per_window = max(1, round(peak_window_s / log.step_s))
    usable = (steps // per_window) * per_window or steps
    windows = building_kw[:usable].reshape(-1, min(per_window, usable)).mean(axis=1)
    on = log.stages > 0
    previous = np.vstack([np.zeros((1, zones), dtype=bool), on[:-1]])
    cycles_per_hour = (on & ~previous).sum(axis=0) / hours
    return Kpis(
        hours=hours,
        discomfort_kelvin_hours_per_zone=float(discomfort.mean()),
        discomfort_kelvin_hours_by_zone={
            z: float(d) for z, d in zip(log.zone_ids, discomfort, strict=True)
        },
        energy_kwh_per_m2=energy_kwh / area_m2,
        cost_per_m2=cost / area_m2,
        peak_power_kw_per_m2=float(windows.max()) / area_m2,
        cycles_per_hour_max=float(cycles_per_hour.max()),
        cycles_per_hour_mean=float(cycles_per_hour.mean()),
    )
