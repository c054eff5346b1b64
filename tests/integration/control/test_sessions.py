"""Device sessions: commands exactly once and in order across reconnects and instances."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import resources_pb2

from tests.integration.control.conftest import Instance, InstanceFactory
from tests.integration.control.resources import EdgeDevice, commands, registered

pytestmark = pytest.mark.integration

FAST = {"heartbeat_interval_s": 0.2}


@pytest.fixture
async def region_a(instance_factory: InstanceFactory) -> AsyncIterator[Instance]:
    async with instance_factory(region="us-east", **FAST) as instance:
        await registered(instance.stub, zones=("z1", "z2"))
        yield instance


@pytest.fixture
async def region_b(
    instance_factory: InstanceFactory, region_a: Instance
) -> AsyncIterator[Instance]:
    async with instance_factory(region="eu-west", **FAST) as instance:
        yield instance


async def test_commands_issued_through_the_hub_reach_the_connected_device(
    region_a: Instance,
) -> None:
    device = EdgeDevice(region_a.stub)
    welcome = await device.hello()
    assert welcome.resume_from_sequence == 1
    result = await region_a.servicer.hub.issue_commands("hq", commands("z1", "z2"))
    assert [(d, c.sequence) for d, c in result.issued] == [("gw1", 1), ("gw1", 2)]
    received = await device.commands(2)
    assert [(c.sequence, c.zone_id) for c in received] == [(1, "z1"), (2, "z2")]
    assert received[0].source == resources_pb2.COMMAND_SOURCE_PLAN
    await device.close()


async def test_a_device_reconnecting_to_the_other_region_gets_exactly_what_it_missed(
    region_a: Instance, region_b: Instance
) -> None:
    hub = region_a.servicer.hub
    device = EdgeDevice(region_a.stub)
    await device.hello()
    await hub.issue_commands("hq", commands("z1", "z2", "z1"))
    assert [c.sequence for c in await device.commands(3)] == [1, 2, 3]
    await device.ack(1)
    await device.ack(2)
    await device.close()  # drops mid-plan: command 3 delivered but never acknowledged
    await hub.issue_commands("hq", commands("z2", "z1"))  # issued while it is away

    moved = EdgeDevice(region_b.stub)
    welcome = await moved.hello(last_applied_sequence=2)
    assert welcome.resume_from_sequence == 3
    assert [c.sequence for c in await moved.commands(3)] == [3, 4, 5]
    await moved.heartbeats_only()  # each once: nothing is sent again
    await hub.issue_commands("hq", commands("z2"))  # region A issues, region B delivers
    assert [c.sequence for c in await moved.commands(1)] == [6]
    await moved.close()


async def test_hello_acknowledges_what_the_device_already_processed(region_a: Instance) -> None:
    await region_a.servicer.hub.issue_commands("hq", commands("z1", "z1", "z1", "z1"))
    device = EdgeDevice(region_a.stub)
    welcome = await device.hello(last_applied_sequence=3)
    assert welcome.resume_from_sequence == 4
    assert [c.sequence for c in await device.commands(1)] == [4]
    await device.close()
    got = await region_a.stub.GetDevice(ctl.GetDeviceRequest(building_id="hq", device_id="gw1"))
    assert got.device.last_acknowledged_sequence == 3
    assert got.device.firmware_version == "2.4.1"


async def test_hello_claiming_a_command_never_issued_is_aborted(region_a: Instance) -> None:
    device = EdgeDevice(region_a.stub)
    device.open()
    await device.send(
        hello=ctl.Hello(
            building_id="hq", device_id="gw1", last_applied_sequence=7, firmware_version="1"
        )
    )
    assert (await device.error()).code() == grpc.StatusCode.ABORTED


async def test_acks_out_of_order_or_ahead_of_delivery_are_aborted(region_a: Instance) -> None:
    await region_a.servicer.hub.issue_commands("hq", commands("z1", "z2"))
    device = EdgeDevice(region_a.stub)
    await device.hello()
    await device.commands(2)
    await device.ack(2)  # skips 1
    assert (await device.error()).code() == grpc.StatusCode.ABORTED
    again = EdgeDevice(region_a.stub)
    await again.hello()
    await again.commands(1)
    await again.ack(1)
    await again.ack(1)  # a repeat is ignored
    await again.ack(5)  # never delivered
    assert (await again.error()).code() == grpc.StatusCode.ABORTED


async def test_a_new_session_supersedes_the_old_one_in_any_instance(
    region_a: Instance, region_b: Instance
) -> None:
    old = EdgeDevice(region_a.stub)
    await old.hello()
    new = EdgeDevice(region_b.stub)
    await new.hello()
    assert (await old.error()).code() == grpc.StatusCode.ABORTED
    got = await region_a.stub.GetDevice(ctl.GetDeviceRequest(building_id="hq", device_id="gw1"))
    assert got.device.connection_state == resources_pb2.CONNECTION_STATE_CONNECTED
    await new.close()


async def test_deleting_a_device_ends_its_session_with_not_found(region_a: Instance) -> None:
    device = EdgeDevice(region_a.stub)
    await device.hello()
    await region_a.servicer.hub.issue_commands("hq", commands("z1"))
    await device.commands(1)
    await region_a.stub.DeleteDevice(ctl.DeleteDeviceRequest(building_id="hq", device_id="gw1"))
    assert (await device.error()).code() == grpc.StatusCode.NOT_FOUND


async def test_commands_for_zones_no_device_commands_are_reported_unserved(
    region_a: Instance,
) -> None:
    await region_a.stub.RegisterDevice(
        ctl.RegisterDeviceRequest(
            device=resources_pb2.Device(
                building_id="hq",
                device_id="gw1",
                kind=resources_pb2.DEVICE_KIND_BMS_GATEWAY,
                zone_ids=["z1"],
            )
        )
    )
    result = await region_a.servicer.hub.issue_commands("hq", commands("z1", "z2"))
    assert [c.zone_id for _, c in result.issued] == ["z1"]
    assert result.unserved_zones == ["z2"]


async def test_an_impossible_command_is_refused_and_nothing_is_issued(
    region_a: Instance, pg: asyncpg.Connection
) -> None:
    with pytest.raises(ValueError, match="power_stage 9"):
        await region_a.servicer.hub.issue_commands("hq", commands("z1") + commands("z2", stage=9))
    assert await pg.fetchval("SELECT count(*) FROM control.commands") == 0
    assert await pg.fetchval("SELECT last_issued_sequence FROM control.devices") == 0


async def test_a_certificate_identity_must_match_hello(
    region_a: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HVAC_TRUSTED_PROXIES", "127.0.0.1")  # this test stands where Envoy would
    hello = ctl.ConnectRequest(
        hello=ctl.Hello(building_id="hq", device_id="gw1", firmware_version="2.4.1")
    )
    impostor = region_a.stub.Connect(
        metadata=(("x-forwarded-client-cert", "URI=spiffe://hvac.local/device/hq/gw9"),)
    )
    await impostor.write(hello)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await impostor.read()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    genuine = region_a.stub.Connect(
        metadata=(("x-forwarded-client-cert", "URI=spiffe://hvac.local/device/hq/gw1"),)
    )
    await genuine.write(hello)
    assert (await genuine.read()).WhichOneof("payload") == "welcome"
    genuine.cancel()


async def test_sequences_stay_gapless_when_both_regions_issue_at_once(
    region_a: Instance, region_b: Instance
) -> None:
    device = EdgeDevice(region_b.stub)
    await device.hello()
    hubs = [region_a.servicer.hub, region_b.servicer.hub] * 4
    results = await asyncio.gather(
        *(hub.issue_commands("hq", commands("z1", "z2")) for hub in hubs)
    )
    issued = sorted(c.sequence for result in results for _, c in result.issued)
    assert issued == list(range(1, 17))
    assert [c.sequence for c in await device.commands(16)] == list(range(1, 17))
    await device.close()
