"""The MPC loop end to end: simulated buildings over real device sessions, a real optimizer (or
none reachable), the audit outbox, and WatchPlans.

The closed-loop tests run in lock-step simulated time: a `ManualClock` drives the loop, and the
simulated building's gateway streams each interval's telemetry, then the clock moves on, the loop
decides, and the gateway runs the commands it received for the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from hvac.audit.v1 import audit_service_pb2, records_pb2
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import resources_pb2
from prometheus_client import REGISTRY

from meshkit import serve
from meshkit.config import from_env
from meshkit.outbox import Outbox, audit_sender
from sim.baseline import BaselineThermostat
from sim.building import BuildingSimulator, Observation
from sim.devices import registration
from sim.edge import EdgeGateway
from sim.kpi import Kpis, compute_kpis
from sim.loop import ClosedLoop, run_closed_loop
from sim.offices import five_zone_office
from sim.prices import time_of_use
from sim.weather import SyntheticWeather
from svc_audit.testing import audit_config, served_audit
from svc_control.clock import ManualClock
from svc_control.loop import ControlLoop, LoopSettings, stop
from svc_control.optimizer_client import OptimizerClient
from svc_optimizer.config import OptimizerConfig
from svc_optimizer.relax_polish import RelaxPolish
from svc_optimizer.service import optimizer_service
from tests.integration.control.conftest import Instance, InstanceFactory

pytestmark = pytest.mark.integration

ACTOR = "spiffe://hvac.local/region/eu-west/svc/control"
INTERVAL_S = 900.0
SPEC = five_zone_office()
ZONES = [z.zone_id for z in SPEC.zones]
TZ = ZoneInfo(SPEC.time_zone)
GUARD_S = 60.0  # hang guard for one interval's round trip, never a speed assertion


def refused_address() -> str:
    """A loopback address where nothing listens: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def simulated_weekday() -> datetime:
    """Local midnight of a weekday two to four days ago: telemetry must be under 7 days old."""
    day = datetime.now(TZ).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def simulator(start: datetime) -> BuildingSimulator:
    return BuildingSimulator(SPEC, SyntheticWeather(SPEC.time_zone, seed=3), start, 18.0, 0.05, 3)


async def register_office(site: Instance, cap_kw: float = 0.0) -> None:
    building, zones = registration(SPEC, "office", time_of_use(), peak_power_cap_kw=cap_kw)
    await site.stub.CreateBuilding(ctl.CreateBuildingRequest(building=building))
    for zone in zones:
        await site.stub.CreateZone(ctl.CreateZoneRequest(zone=zone))
    device = resources_pb2.Device(
        building_id="office",
        device_id="bms",
        kind=resources_pb2.DEVICE_KIND_BMS_GATEWAY,
        zone_ids=ZONES,
    )
    await site.stub.RegisterDevice(ctl.RegisterDeviceRequest(device=device))


@dataclass
class Run:
    loop: ControlLoop
    gateway: EdgeGateway
    building: ClosedLoop
    clock: ManualClock


@contextlib.asynccontextmanager
async def lock_step(
    site: Instance,
    start: datetime,
    optimizer: OptimizerClient | None,
    outbox: Outbox,
) -> AsyncIterator[Run]:
    """The loop on a ManualClock at `start`, and the office's gateway connected to `site`."""
    clock = ManualClock(start.timestamp())
    loop = ControlLoop(
        site.servicer.store,
        site.servicer.hub,
        site.servicer.publish_plan,
        clock,
        LoopSettings(region="eu-west", actor=ACTOR),
        optimizer,
        outbox,
    )
    site.servicer.on_overrides_changed = loop.on_overrides_changed
    async with grpc.aio.insecure_channel(site.server.address) as channel:
        gateway = EdgeGateway(channel, "office", "bms")
        await gateway.connect()
        building = ClosedLoop(simulator(start), time_of_use())
        await gateway.send([building.observe()])  # the first interval's telemetry
        task = asyncio.create_task(loop.run())
        try:
            yield Run(loop, gateway, building, clock)
        finally:
            await stop(task)
            await gateway.close()
            site.servicer.on_overrides_changed = None


async def run_intervals(run: Run, count: int) -> None:
    """Let `count` intervals pass: each one's commands reach the gateway, the building runs
    them while streaming telemetry, and the clock moves to the next interval (the loop's clock
    stays at the last interval's start, so the loop decides exactly `count` intervals)."""
    for k in range(count):
        now = datetime.fromtimestamp(run.clock.now_s(), UTC)
        await asyncio.wait_for(run.gateway.wait_for_commands(ZONES, now), GUARD_S)
        streamed: list[Observation] = []
        run.building.advance(run.gateway.device_commands(ZONES), INTERVAL_S, streamed.append)
        streamed.append(run.building.observe())
        await run.gateway.send(streamed)
        if k < count - 1:
            run.clock.advance(INTERVAL_S)
    await asyncio.wait_for(_until(lambda: run.loop.intervals >= count), GUARD_S)


async def _until(condition: object) -> None:
    assert callable(condition)
    while not condition():
        await asyncio.sleep(0.02)


def spooled(folder: Path) -> list[records_pb2.AuditEvent]:
    """The events waiting in an outbox folder for audit, oldest first."""
    events = []
    for path in sorted((folder / "pending").glob("*.pb")):
        event = records_pb2.AuditEvent()
        event.ParseFromString(path.read_bytes())
        events.append(event)
    return events


def _fallback_count(building_id: str) -> float:
    labels = {"building": building_id, "outcome": "fallback"}
    return REGISTRY.get_sample_value("hvac_control_intervals_total", labels) or 0.0


async def test_with_the_optimizer_stopped_a_simulated_day_stays_as_comfortable_as_the_baseline(
    control: Instance, tmp_path: Path
) -> None:
    await register_office(control)
    fallbacks_before = _fallback_count("office")
    start = simulated_weekday()
    optimizer = OptimizerClient.open(refused_address(), deadline_s=5.0)
    async with grpc.aio.insecure_channel(refused_address()) as audit_channel:
        outbox = Outbox(tmp_path / "outbox", audit_sender(audit_channel))  # audit down too
        async with lock_step(control, start, optimizer, outbox) as run:
            await run_intervals(run, 96)
            served: Kpis = compute_kpis(run.building.log())
    await optimizer.close()

    baseline = compute_kpis(
        run_closed_loop(simulator(start), BaselineThermostat(SPEC), 86400.0, time_of_use(), 60.0)
    )
    for zone_id in ZONES:
        assert served.discomfort_kelvin_hours_by_zone[zone_id] <= (
            baseline.discomfort_kelvin_hours_by_zone[zone_id] + 1.0
        ), (zone_id, served, baseline)
    assert run.gateway.rejected == []
    assert (run.loop.intervals, run.loop.fallbacks) == (96, 96)
    assert _fallback_count("office") - fallbacks_before == 96  # exported to Prometheus
    for zone_id in ZONES:  # the learnt models' hour-ahead error is tracked per zone
        error_k = REGISTRY.get_sample_value(
            "hvac_control_model_prediction_error_kelvin", {"building": "office", "zone": zone_id}
        )
        assert error_k is not None and 0.0 <= error_k < 1.0, (zone_id, error_k)

    state = await control.stub.GetBuildingState(ctl.GetBuildingStateRequest(building_id="office"))
    stats = state.state.fallbacks
    assert (stats.intervals_total, stats.fallback_intervals_total) == (96, 96)
    assert "unreachable" in stats.last_fallback_reason
    assert state.state.mode == resources_pb2.CONTROL_MODE_FALLBACK

    events = spooled(outbox.folder)  # audit unreachable: every event waits, durable, spooled
    assert [e.action for e in events] == ["control.plan.fell_back"] * 96
    assert all(e.outcome == records_pb2.OUTCOME_FAILURE for e in events)
    assert all("unreachable" in e.attributes["fallback_reason"] for e in events)
    starts = [e.attributes["interval_start"] for e in events]
    assert starts == [
        datetime.fromtimestamp(start.timestamp() + k * INTERVAL_S, UTC).isoformat()
        for k in range(96)
    ]
    commands = run.gateway.received
    assert {c.source for c in commands} == {resources_pb2.COMMAND_SOURCE_FALLBACK_THERMOSTAT}
    assert len(commands) == 96 * len(ZONES)


async def test_in_accelerated_time_the_service_counts_and_spools_every_fallback(
    instance_factory: InstanceFactory, tmp_path: Path
) -> None:
    settings = {
        "control_loop": True,
        "time_acceleration": 900.0,  # a 15-minute interval per real second
        "optimizer_address": refused_address(),
        "audit_address": refused_address(),
        "outbox_dir": tmp_path / "outbox",
        "region": "eu-west",
    }
    async with instance_factory(**settings) as site:
        await register_office(site)
        request = ctl.GetBuildingStateRequest(building_id="office")

        async def fallbacks() -> resources_pb2.FallbackStats:
            state: resources_pb2.BuildingState = (await site.stub.GetBuildingState(request)).state
            return state.fallbacks

        async def three_intervals() -> None:
            while (await fallbacks()).fallback_intervals_total < 3:
                await asyncio.sleep(0.1)

        await asyncio.wait_for(three_intervals(), GUARD_S)
        stats = await fallbacks()
        state = (await site.stub.GetBuildingState(request)).state
        issued = await site.servicer.store.commands_from("office", "bms", 1, 10_000)
    assert stats.intervals_total == stats.fallback_intervals_total
    assert "unreachable" in stats.last_fallback_reason
    assert state.mode == resources_pb2.CONTROL_MODE_FALLBACK
    assert state.last_plan.solver_backend == "thermostat"
    # Every interval commanded every zone, from the thermostat: never uncontrolled.
    assert len(issued) >= len(ZONES) * stats.fallback_intervals_total
    assert {c.zone_id for c in issued} == set(ZONES)
    assert {c.source for c in issued} == {resources_pb2.COMMAND_SOURCE_FALLBACK_THERMOSTAT}
    events = spooled(tmp_path / "outbox" / "eu-west")  # the region's spool
    assert len(events) >= stats.fallback_intervals_total
    assert {e.action for e in events} == {"control.plan.fell_back"}
    assert {e.actor for e in events} == {ACTOR}


@contextlib.asynccontextmanager
async def optimizer_server() -> AsyncIterator[str]:
    config = from_env(OptimizerConfig, environ={})
    server = await serve([optimizer_service(config, [RelaxPolish()])], config)
    try:
        yield server.address
    finally:
        await server.stop(0)


async def test_optimized_plans_pass_the_envelope_reach_the_device_and_stream_to_watchers(
    control: Instance, database_url: str, tmp_path: Path
) -> None:
    # A cap the optimizer must plan under; the envelope holds every command to it as well.
    await register_office(control, cap_kw=9.0)
    start = simulated_weekday() + timedelta(hours=6)
    watcher = control.stub.WatchPlans(ctl.WatchPlansRequest(building_id="office"))
    watched: list[resources_pb2.Plan] = []

    async def watch() -> None:
        async for event in watcher:
            if event.HasField("plan"):
                watched.append(event.plan)

    watching = asyncio.create_task(watch())
    async with (
        optimizer_server() as address,
        served_audit(audit_config(database_url, tmp_path / "audit")) as audit,
        grpc.aio.insecure_channel(audit.address) as audit_channel,
    ):
        optimizer = OptimizerClient.open(address, deadline_s=3.0)
        outbox = Outbox(tmp_path / "outbox", audit_sender(audit_channel))
        relay = asyncio.create_task(outbox.run(idle_poll_s=0.1))
        async with lock_step(control, start, optimizer, outbox) as run:
            await run_intervals(run, 6)
            run.clock.advance(INTERVAL_S)  # the loop catches up with the devices' time
            await asyncio.wait_for(_until(lambda: run.loop.intervals == 7), GUARD_S)
            # An operator override reaches the device at once, between intervals.
            override = resources_pb2.Override(
                building_id="office",
                zone_id="north",
                kind=resources_pb2.OVERRIDE_KIND_SETPOINT,
                heating_setpoint_c=23.0,
                cooling_setpoint_c=26.0,
                ttl=Duration(seconds=3600),
                reason="tenant asked for warmth",
            )
            made = await control.stub.CreateOverride(ctl.CreateOverrideRequest(override=override))
            await asyncio.wait_for(
                _until(lambda: run.gateway.commands["north"].override_id != ""), GUARD_S
            )
            held = run.gateway.commands["north"]
            received = list(run.gateway.received)
            # Cancelling it gives the zone back to the plan at once.
            cancel = ctl.CancelOverrideRequest(
                building_id="office", override_id=made.override.override_id
            )
            await control.stub.CancelOverride(cancel)
            await asyncio.wait_for(
                _until(lambda: run.gateway.commands["north"].override_id == ""), GUARD_S
            )
            restored = run.gateway.commands["north"]
        await asyncio.wait_for(_until(lambda: outbox.stats().backlog == 0), GUARD_S)
        await asyncio.wait_for(_until(lambda: len(watched) == 7), GUARD_S)
        await stop(relay)
        await optimizer.close()
        query = audit_service_pb2.QueryRequest(building_id="office", action="control.plan.applied")
        audited = [r async for page in audit.stub.Query(query) for r in page.records]
    watching.cancel()

    assert (run.loop.intervals, run.loop.fallbacks) == (7, 0)
    plans = {p.plan_id: p for p in watched}
    assert len(plans) == 7  # WatchPlans streamed every published plan
    assert all(p.status == resources_pb2.PLAN_STATUS_OPTIMIZED for p in plans.values())
    assert all(p.solver_backend == "relax_polish" for p in plans.values())
    from_plans = [c for c in received if c.source == resources_pb2.COMMAND_SOURCE_PLAN]
    assert len(from_plans) == 7 * len(ZONES)
    for command in from_plans:  # each command is its plan's first step, after the envelope
        plan = plans[command.plan_id]
        [zone] = [z for z in plan.zones if z.zone_id == command.zone_id]
        first = zone.steps[0]
        assert (command.power_stage, command.heating_setpoint_c, command.cooling_setpoint_c) == (
            first.power_stage,
            first.heating_setpoint_c,
            first.cooling_setpoint_c,
        )
        assert 10.0 <= command.heating_setpoint_c <= command.cooling_setpoint_c - 2.8 <= 29.2
    by_plan: dict[str, float] = {}
    for command in from_plans:
        by_plan[command.plan_id] = by_plan.get(command.plan_id, 0.0) + command.power_kw
    assert max(by_plan.values()) <= 9.0 + 1e-9
    assert held.source == resources_pb2.COMMAND_SOURCE_OVERRIDE
    assert held.override_id == made.override.override_id
    assert (held.heating_setpoint_c, held.cooling_setpoint_c) == (23.0, 26.0)
    assert restored.source == resources_pb2.COMMAND_SOURCE_PLAN
    assert restored.plan_id == watched[-1].plan_id  # the latest plan's, re-applied
    assert sorted(r.event.attributes["plan_id"] for r in audited) == sorted(plans)
