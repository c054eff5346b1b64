"""`python -m sim`: the reference office under the baseline and under control's fallback.

Runs the five-zone office (Paris, a January week from Monday, time-of-use prices) twice in
simulated time — with the baseline thermostat, and with control's `BuildingController` and no
optimizer (every interval falls back) — and prints the KPIs side by side with the identified
models' 1-hour-ahead prediction error. Options: --days N, --seed N, --noise K.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from zoneinfo import ZoneInfo

from sim.baseline import BaselineThermostat
from sim.building import BuildingSimulator
from sim.devices import ControlledBuilding, registration
from sim.kpi import compute_kpis
from sim.loop import run_closed_loop
from sim.offices import five_zone_office
from sim.prices import time_of_use
from sim.weather import SyntheticWeather
from svc_control.controller import BuildingController
from svc_control.plant import BuildingPlant


def main() -> int:
    """Run both controllers and print the table."""
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.05, help="sensor noise s.d., K")
    args = parser.parse_args()
    spec, tariff = five_zone_office(), time_of_use()
    start = datetime(2026, 1, 12, tzinfo=ZoneInfo(spec.time_zone))
    duration_s = args.days * 86400.0

    def simulator() -> BuildingSimulator:
        weather = SyntheticWeather(spec.time_zone, seed=args.seed)
        return BuildingSimulator(spec, weather, start, 18.0, args.noise, args.seed)

    baseline = compute_kpis(
        run_closed_loop(simulator(), BaselineThermostat(spec), duration_s, tariff, 60.0)
    )
    building, zones = registration(spec, "office", tariff)
    controlled = ControlledBuilding(BuildingController(BuildingPlant.from_proto(building, zones)))
    fallback = compute_kpis(
        run_closed_loop(
            simulator(), controlled, duration_s, tariff, on_telemetry=controlled.on_telemetry
        )
    )
    rows: list[tuple[str, float, float]] = [
        (f"{name} ({unit})", getattr(baseline, field), getattr(fallback, field))
        for name, unit, field in KPI_ROWS
    ]
    print(f"{args.days:g} days, five-zone office, seed {args.seed}")
    print(f"{'KPI':<36} {'baseline':>10} {'fallback':>10}")
    for label, base, fall in rows:
        print(f"{label:<36} {base:>10.4f} {fall:>10.4f}")
    for zone_id, identifier in controlled.controller.identifiers.items():
        rmse = identifier.prediction_rmse_k()
        print(f"1-hour prediction RMSE {zone_id:<13} {'':>10} {rmse or float('nan'):>10.3f} K")
    return 0


KPI_ROWS: tuple[tuple[str, str, str], ...] = (
    ("discomfort", "K·h per zone", "discomfort_kelvin_hours_per_zone"),
    ("energy", "kWh/m²", "energy_kwh_per_m2"),
    ("cost", "per m²", "cost_per_m2"),
    ("peak power", "kW/m²", "peak_power_kw_per_m2"),
    ("cycles", "max per hour", "cycles_per_hour_max"),
)

if __name__ == "__main__":
    raise SystemExit(main())
