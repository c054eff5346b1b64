"""Telemetry: stored once (partitioned by day), cached in Redis, bad samples refused one by one."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
import redis.asyncio
from google.rpc import code_pb2, error_details_pb2
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import resources_pb2

from meshkit.testing import RedisNamespace
from tests.integration.control.conftest import Instance, InstanceFactory
from tests.integration.control.resources import EdgeDevice, reading, registered, telemetry

pytestmark = pytest.mark.integration


@pytest.fixture
async def site(instance_factory: InstanceFactory) -> AsyncIterator[Instance]:
    """Zones z1, z2 (gw1 serves z1), z3 (served by nobody)."""
    async with instance_factory(heartbeat_interval_s=0.2) as instance:
        await registered(instance.stub, zones=("z1", "z2", "z3"), devices={"gw1": ("z1",)})
        await instance.stub.RegisterDevice(
            ctl.RegisterDeviceRequest(
                device=resources_pb2.Device(
                    building_id="hq",
                    device_id="gw2",
                    kind=resources_pb2.DEVICE_KIND_THERMOSTAT,
                    zone_ids=["z2"],
                )
            )
        )
        yield instance


@pytest.fixture
async def device(site: Instance) -> AsyncIterator[EdgeDevice]:
    edge = EdgeDevice(site.stub)
    await edge.hello()
    yield edge
    await edge.close()


async def _stored(pg: asyncpg.Connection) -> list[int]:
    rows = await pg.fetch("SELECT sequence FROM control.telemetry ORDER BY sequence")
    return [r["sequence"] for r in rows]


async def test_a_sample_is_stored_once_and_a_resend_is_already_exists(
    site: Instance, device: EdgeDevice, pg: asyncpg.Connection
) -> None:
    sample = telemetry(1, reading(temperature_c=20.5), outdoor_temperature_c=3.0)
    assert (await device.telemetry_ack(sample)).status.code == code_pb2.OK
    resent = await device.telemetry_ack(sample)
    assert (resent.sequence, resent.status.code) == (1, code_pb2.ALREADY_EXISTS)
    assert await _stored(pg) == [1]
    [(device_id, stored)] = await site.servicer.store.telemetry_between(
        "hq", datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC)
    )
    assert (device_id, stored) == ("gw1", sample)
    partition = await pg.fetchval(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'control.telemetry'::regclass"
    )
    assert partition == f"telemetry_{sample.sample_time.ToDatetime():%Y%m%d}"


async def test_welcome_reports_the_last_stored_telemetry_sequence(
    site: Instance, device: EdgeDevice
) -> None:
    for sequence in (1, 2, 3):
        await device.telemetry_ack(telemetry(sequence))
    await device.close()
    welcome = await EdgeDevice(site.stub).hello()
    assert welcome.last_telemetry_sequence == 3


async def test_out_of_range_samples_are_refused_and_the_session_goes_on(
    device: EdgeDevice, pg: asyncpg.Connection
) -> None:
    hot = await device.telemetry_ack(telemetry(1, reading(temperature_c=120.0)))
    assert hot.status.code == code_pb2.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert hot.status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["telemetry.readings[0].temperature_c"]
    not_a_number = await device.telemetry_ack(telemetry(2, reading(temperature_c=math.nan)))
    assert not_a_number.status.code == code_pb2.INVALID_ARGUMENT
    stage = await device.telemetry_ack(telemetry(3, reading(power_stage=3)))  # z1 has 3 stages
    assert stage.status.code == code_pb2.INVALID_ARGUMENT
    future = telemetry(4)
    future.sample_time.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    assert (await device.telemetry_ack(future)).status.code == code_pb2.INVALID_ARGUMENT
    assert (await device.telemetry_ack(telemetry(5))).status.code == code_pb2.OK
    assert await _stored(pg) == [5]


async def test_zones_are_checked_against_the_building_and_the_device(
    device: EdgeDevice, pg: asyncpg.Connection
) -> None:
    unknown = await device.telemetry_ack(telemetry(1, reading("nowhere")))
    assert unknown.status.code == code_pb2.NOT_FOUND
    foreign = await device.telemetry_ack(telemetry(2, reading("z1"), reading("z2")))
    assert foreign.status.code == code_pb2.PERMISSION_DENIED
    assert await _stored(pg) == []


async def test_the_latest_reading_per_zone_is_cached_and_only_moves_forward(
    site: Instance, device: EdgeDevice, redis_namespace: RedisNamespace
) -> None:
    newer = telemetry(2, reading(temperature_c=22.0, occupancy=resources_pb2.OCCUPANCY_OCCUPIED))
    older = telemetry(1, reading(temperature_c=18.0))
    older.sample_time.FromDatetime(newer.sample_time.ToDatetime(UTC) - timedelta(minutes=5))
    await device.telemetry_ack(newer)
    await device.telemetry_ack(older)  # buffered, arriving late
    state = await site.stub.GetBuildingState(ctl.GetBuildingStateRequest(building_id="hq"))
    z1 = next(z for z in state.state.zones if z.zone_id == "z1")
    assert z1.latest_reading.temperature_c == 22.0
    assert z1.reading_time == newer.sample_time
    assert z1.occupancy == resources_pb2.OCCUPANCY_OCCUPIED
    client = redis.asyncio.Redis.from_url(redis_namespace.url)
    try:
        assert await client.hexists(redis_namespace.key("building", "hq", "latest"), "zone:z1")
    finally:
        await client.aclose()


async def test_telemetry_before_hello_is_failed_precondition(site: Instance) -> None:
    edge = EdgeDevice(site.stub)
    edge.open()
    await edge.send(telemetry=telemetry(1))
    assert (await edge.error()).code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_second_hello_is_failed_precondition(device: EdgeDevice) -> None:
    await device.send(hello=ctl.Hello(building_id="hq", device_id="gw1", firmware_version="2.4.1"))
    assert (await device.error()).code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_hello_for_an_unknown_building_or_device_is_not_found(site: Instance) -> None:
    for building_id, device_id in (("nowhere", "gw1"), ("hq", "ghost")):
        edge = EdgeDevice(site.stub, device_id=device_id, building_id=building_id)
        edge.open()
        await edge.send(
            hello=ctl.Hello(building_id=building_id, device_id=device_id, firmware_version="1")
        )
        assert (await edge.error()).code() == grpc.StatusCode.NOT_FOUND


async def test_a_malformed_hello_or_a_sample_without_sequence_ends_the_stream(
    site: Instance, device: EdgeDevice, pg: asyncpg.Connection
) -> None:
    edge = EdgeDevice(site.stub)
    edge.open()
    await edge.send(hello=ctl.Hello(building_id="HQ!", device_id="gw1", firmware_version="1"))
    assert (await edge.error()).code() == grpc.StatusCode.INVALID_ARGUMENT
    await device.send(telemetry=telemetry(0))
    assert (await device.error()).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await _stored(pg) == []


async def test_bytes_that_are_not_a_message_are_invalid_argument(site: Instance) -> None:
    async with grpc.aio.insecure_channel(site.server.address) as channel:
        connect = channel.stream_stream("/hvac.control.v1.ControlService/Connect")
        call = connect()
        await call.write(b"\xff\xff\xff")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_reregistered_device_may_report_its_new_zones_in_the_same_session(
    site: Instance, device: EdgeDevice, pg: asyncpg.Connection
) -> None:
    refused = await device.telemetry_ack(telemetry(1, reading("z3")))
    assert refused.status.code == code_pb2.PERMISSION_DENIED
    await site.stub.RegisterDevice(
        ctl.RegisterDeviceRequest(
            device=resources_pb2.Device(
                building_id="hq",
                device_id="gw1",
                kind=resources_pb2.DEVICE_KIND_BMS_GATEWAY,
                zone_ids=["z1", "z3"],
            )
        )
    )
    accepted = await device.telemetry_ack(telemetry(2, reading("z3")))
    assert accepted.status.code == code_pb2.OK
    assert await _stored(pg) == [2]


async def test_building_state_survives_a_lost_cache_and_refills_it(
    site: Instance, device: EdgeDevice, redis_namespace: RedisNamespace
) -> None:
    await device.telemetry_ack(telemetry(1, reading(temperature_c=23.5)))
    key = redis_namespace.key("building", "hq", "latest")
    client = redis.asyncio.Redis.from_url(redis_namespace.url)
    try:
        await client.delete(key)
        state = await site.stub.GetBuildingState(ctl.GetBuildingStateRequest(building_id="hq"))
        z1 = next(z for z in state.state.zones if z.zone_id == "z1")
        assert z1.latest_reading.temperature_c == 23.5
        assert await client.hexists(key, "zone:z1")
    finally:
        await client.aclose()
