"""WatchPlans: published plans and acknowledged commands, replayed in time order, then live."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import resources_pb2

from tests.integration.control.conftest import Instance, InstanceFactory
from tests.integration.control.resources import EdgeDevice, commands, registered

pytestmark = pytest.mark.integration


@pytest.fixture
async def site(instance_factory: InstanceFactory) -> AsyncIterator[Instance]:
    async with instance_factory(heartbeat_interval_s=0.2) as instance:
        await registered(instance.stub, zones=("z1", "z2"))
        yield instance


def plan(status: int = resources_pb2.PLAN_STATUS_OPTIMIZED, **fields: Any) -> resources_pb2.Plan:
    made = resources_pb2.Plan(
        plan_id=str(uuid.uuid4()),
        building_id="hq",
        status=status,  # type: ignore[arg-type]
        solver_backend="highs" if status == resources_pb2.PLAN_STATUS_OPTIMIZED else "thermostat",
        zones=[resources_pb2.ZonePlan(zone_id="z1"), resources_pb2.ZonePlan(zone_id="z2")],
        **fields,
    )
    made.create_time.FromDatetime(datetime.now(UTC))
    return made


async def _next(call: Any) -> ctl.WatchPlansResponse:
    message: ctl.WatchPlansResponse = await asyncio.wait_for(call.read(), 10)
    return message


async def test_a_subscriber_gets_the_latest_plan_then_new_plans_and_acks(site: Instance) -> None:
    await site.servicer.publish_plan(plan())
    latest = plan()
    await site.servicer.publish_plan(latest)
    call = site.stub.WatchPlans(ctl.WatchPlansRequest(building_id="hq"))
    assert (await _next(call)).plan.plan_id == latest.plan_id
    newer = plan(resources_pb2.PLAN_STATUS_FALLBACK, fallback_reason="deadline exceeded")
    await site.servicer.publish_plan(newer)
    assert (await _next(call)).plan == newer
    device = EdgeDevice(site.stub)
    await device.hello()
    await site.servicer.hub.issue_commands("hq", commands("z2"))
    await device.commands(1)
    await device.ack(1)
    applied = (await _next(call)).applied_command
    assert (applied.device_id, applied.command.sequence, applied.command.zone_id) == (
        "gw1",
        1,
        "z2",
    )
    assert applied.outcome == resources_pb2.COMMAND_OUTCOME_APPLIED
    call.cancel()
    await device.close()


async def test_start_time_replays_plans_and_acks_in_time_order_for_chosen_zones(
    site: Instance,
) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    device = EdgeDevice(site.stub)
    await device.hello()
    first = plan()
    await site.servicer.publish_plan(first)
    await site.servicer.hub.issue_commands("hq", commands("z1", "z2"))
    await device.commands(2)
    await device.ack(1)
    await device.ack(2)
    await asyncio.sleep(0.05)  # let the acknowledgements commit before the next plan
    second = plan()
    await site.servicer.publish_plan(second)
    request = ctl.WatchPlansRequest(building_id="hq", zone_ids=["z1"])
    request.start_time.FromDatetime(start)
    call = site.stub.WatchPlans(request)
    events = [await _next(call) for _ in range(3)]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["plan", "applied_command", "plan"]
    assert [events[0].plan.plan_id, events[2].plan.plan_id] == [first.plan_id, second.plan_id]
    assert [z.zone_id for z in events[0].plan.zones] == ["z1"]
    assert events[1].applied_command.command.zone_id == "z1"  # z2's ack is filtered out
    call.cancel()
    await device.close()


async def test_watching_an_unknown_building_or_zone_is_not_found(site: Instance) -> None:
    for request in (
        ctl.WatchPlansRequest(building_id="nowhere"),
        ctl.WatchPlansRequest(building_id="hq", zone_ids=["z9"]),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _next(site.stub.WatchPlans(request))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_stream_ends_with_not_found_when_the_building_is_deleted(
    site: Instance,
) -> None:
    call = site.stub.WatchPlans(ctl.WatchPlansRequest(building_id="hq"))
    await site.stub.DeleteDevice(ctl.DeleteDeviceRequest(building_id="hq", device_id="gw1"))
    for zone_id in ("z1", "z2"):
        await site.stub.DeleteZone(ctl.DeleteZoneRequest(building_id="hq", zone_id=zone_id))
    await site.stub.DeleteBuilding(ctl.DeleteBuildingRequest(building_id="hq"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _next(call)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_building_state_reports_the_latest_plan_and_fallbacks(site: Instance) -> None:
    await site.servicer.publish_plan(plan())
    await site.servicer.publish_plan(
        plan(resources_pb2.PLAN_STATUS_FALLBACK, fallback_reason="optimizer unreachable")
    )
    state = (await site.stub.GetBuildingState(ctl.GetBuildingStateRequest(building_id="hq"))).state
    assert state.mode == resources_pb2.CONTROL_MODE_FALLBACK
    assert state.last_plan.solver_backend == "thermostat"
    stats = state.fallbacks
    assert (stats.intervals_total, stats.fallback_intervals_total) == (2, 1)
    assert (stats.intervals_24h, stats.fallback_intervals_24h) == (2, 1)
    assert stats.last_fallback_reason == "optimizer unreachable"
