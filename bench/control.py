"""MPC against the baseline thermostat: the five-zone office over one simulated week.

The reference office (`sim.offices`, Paris, a January week from Monday, time-of-use prices
0.044 / 0.084 / 0.138 per kWh, sensor noise 0.05 K) runs twice from the same weather:

- baseline: a wall thermostat on the true occupancy schedule, occupied 21-24 °C, setback
  15-30 °C, acting every minute (`sim.baseline`);
- MPC: control's `BuildingController` learning the building from telemetry only, each 15-minute
  interval's problem solved by the optimizer service (its whole portfolio, served on loopback,
  reached over gRPC by `svc_control.optimizer_client` with the loop's deadline), the plan
  passed through the safety envelope; a failed or late solve falls back to the thermostat, as
  the loop does.

The KPIs come from `sim.kpi` for both. Goals (issue 6): at least 20 % lower energy cost and 50 %
less discomfort than the baseline, at most 6 cycles per hour per zone. Device sessions, the
database and audit are left out here (the integration tests drive them); this measures control
quality.

Run: ``.venv/bin/python -m bench.control`` (about 12 minutes: 672 solves), or with ``--days 2``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from bench.report import Figure, write
from meshkit import serve
from meshkit.config import from_env
from sim.baseline import BaselineThermostat
from sim.building import BuildingSimulator, Observation
from sim.devices import device_commands, registration, telemetry
from sim.kpi import Kpis, compute_kpis
from sim.loop import ClosedLoop, run_closed_loop
from sim.offices import five_zone_office
from sim.prices import time_of_use
from sim.weather import SyntheticWeather
from svc_control.controller import BuildingController
from svc_control.optimizer_client import OptimizerClient
from svc_control.plant import BuildingPlant
from svc_optimizer.config import OptimizerConfig
from svc_optimizer.isolated import warm_up
from svc_optimizer.service import default_backends, optimizer_service

SPEC = five_zone_office()
START = datetime(2026, 1, 12, tzinfo=ZoneInfo(SPEC.time_zone))
INTERVAL_S = 900.0


@dataclass
class MpcRun:
    kpis: Kpis
    solve_s: list[float]
    fallbacks: int
    intervals: int


def simulator(seed: int) -> BuildingSimulator:
    weather = SyntheticWeather(SPEC.time_zone, seed=seed)
    return BuildingSimulator(SPEC, weather, START, 18.0, 0.05, seed)


async def mpc(days: float, seed: int, client: OptimizerClient) -> MpcRun:
    """The MPC run: learn, plan with the optimizer, envelope, devices, every interval."""
    tariff = time_of_use()
    building, zones = registration(SPEC, "office", tariff)
    controller = BuildingController(BuildingPlant.from_proto(building, zones))
    loop = ClosedLoop(simulator(seed), tariff)

    def ingest(observation: Observation) -> None:
        controller.ingest(telemetry(observation))

    solve_s: list[float] = []
    for _ in range(round(days * 86400.0 / INTERVAL_S)):
        observation = loop.observe()
        ingest(observation)
        now_s = observation.time.timestamp()
        problem = controller.problem(now_s)
        outcome = await client.solve(problem)
        solve_s.append(outcome.elapsed_s)
        decision = controller.decide(now_s, (), problem, outcome.schedule, outcome.failure or "")
        loop.advance(device_commands(decision), INTERVAL_S, ingest)
    return MpcRun(compute_kpis(loop.log()), solve_s, controller.fallbacks, controller.intervals)


def baseline(days: float, seed: int) -> Kpis:
    thermostat = BaselineThermostat(SPEC)
    log = run_closed_loop(simulator(seed), thermostat, days * 86400.0, time_of_use(), 60.0)
    return compute_kpis(log)


def _reduction(baseline_value: float, value: float) -> float:
    return 100.0 * (1.0 - value / baseline_value) if baseline_value else 0.0


async def measure(days: float, seed: int, deadline_s: float) -> tuple[list[Figure], Kpis, MpcRun]:
    warm_up()
    config = from_env(OptimizerConfig, environ={})
    server = await serve([optimizer_service(config, default_backends(config))], config)
    client = OptimizerClient.open(server.address, deadline_s)
    try:
        run = await mpc(days, seed, client)
    finally:
        await client.close()
        await server.stop(0)
    base = baseline(days, seed)
    kpis = run.kpis
    cost_cut = _reduction(base.cost_per_m2, kpis.cost_per_m2)
    comfort_cut = _reduction(
        base.discomfort_kelvin_hours_per_zone, kpis.discomfort_kelvin_hours_per_zone
    )
    solves = sorted(run.solve_s)
    figures = [
        Figure("energy cost reduction vs baseline", cost_cut, "%", ">= 20", cost_cut >= 20.0),
        Figure("discomfort reduction vs baseline", comfort_cut, "%", ">= 50", comfort_cut >= 50.0),
        Figure(
            "cycles per hour per zone (max, MPC)",
            kpis.cycles_per_hour_max,
            "1/h",
            "<= 6",
            kpis.cycles_per_hour_max <= 6.0,
        ),
        Figure(
            "energy change vs baseline",
            -_reduction(base.energy_kwh_per_m2, kpis.energy_kwh_per_m2),
            "%",
            "reported",
        ),
        Figure("discomfort, baseline", base.discomfort_kelvin_hours_per_zone, "K·h/zone", "-"),
        Figure("discomfort, MPC", kpis.discomfort_kelvin_hours_per_zone, "K·h/zone", "-"),
        Figure("cost, baseline", 1000.0 * base.cost_per_m2, "milli/m²", "-"),
        Figure("cost, MPC", 1000.0 * kpis.cost_per_m2, "milli/m²", "-"),
        Figure("energy, baseline", 1000.0 * base.energy_kwh_per_m2, "Wh/m²", "-"),
        Figure("energy, MPC", 1000.0 * kpis.energy_kwh_per_m2, "Wh/m²", "-"),
        Figure("peak power, baseline", 1000.0 * base.peak_power_kw_per_m2, "W/m²", "-"),
        Figure("peak power, MPC", 1000.0 * kpis.peak_power_kw_per_m2, "W/m²", "-"),
        Figure("fallback intervals", run.fallbacks, "count", f"of {run.intervals}"),
        Figure("solve time p50", 1000.0 * statistics.median(solves), "ms", "-"),
        Figure("solve time max", 1000.0 * solves[-1], "ms", f"< deadline {deadline_s:g} s"),
    ]
    return figures, base, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.control", description=__doc__)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline-s", type=float, default=1.5, help="per solve, real seconds")
    args = parser.parse_args(argv)
    figures, _, _ = asyncio.run(measure(args.days, args.seed, args.deadline_s))
    write(
        "control",
        figures,
        {
            "days": args.days,
            "seed": args.seed,
            "deadline_s": args.deadline_s,
            "building": "five-zone office, 900 m², Paris, from Monday 2026-01-12",
            "tariff": "time of use 0.044 / 0.084 / 0.138 per kWh (on-peak weekdays 14-18 h)",
        },
    )
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
