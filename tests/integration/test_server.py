"""meshkit.serve(): validation before servicer code, rich errors, health, graceful shutdown."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hvac.common.v1.common_pb2 import ComfortBand

from meshkit import RunningServer, Service, serve

SERVICE = "test.v1.BandService"


class BandServicer:
    """Counts the calls that reach servicer code."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def Echo(self, request: ComfortBand, context: Any) -> ComfortBand:
        self.calls += 1
        return request

    async def Slow(self, request: ComfortBand, context: Any) -> ComfortBand:
        self.calls += 1
        await self.release.wait()
        return request

    async def Sum(self, requests: AsyncIterator[ComfortBand], context: Any) -> ComfortBand:
        total = ComfortBand()
        async for band in requests:
            self.calls += 1
            total.lower_c += band.lower_c
            total.upper_c += band.upper_c
        return total

    async def Each(
        self, requests: AsyncIterator[ComfortBand], context: Any
    ) -> AsyncIterator[ComfortBand]:
        async for band in requests:
            self.calls += 1
            yield band


def _add(servicer: BandServicer, server: grpc.aio.Server) -> None:
    codec = {
        "request_deserializer": ComfortBand.FromString,
        "response_serializer": ComfortBand.SerializeToString,
    }
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(servicer.Echo, **codec),
        "Slow": grpc.unary_unary_rpc_method_handler(servicer.Slow, **codec),
        "Sum": grpc.stream_unary_rpc_method_handler(servicer.Sum, **codec),
        "Each": grpc.stream_stream_rpc_method_handler(servicer.Each, **codec),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture
async def running() -> AsyncIterator[tuple[RunningServer, BandServicer, grpc.aio.Channel]]:
    servicer = BandServicer()
    server = await serve([Service(SERVICE, servicer, _add)])
    channel = grpc.aio.insecure_channel(server.address)
    yield server, servicer, channel
    servicer.release.set()
    await channel.close()
    await server.stop(0)


def _call(channel: grpc.aio.Channel, method: str, kind: str = "unary_unary") -> Any:
    factory = getattr(channel, kind)
    return factory(
        f"/{SERVICE}/{method}",
        request_serializer=ComfortBand.SerializeToString,
        response_deserializer=ComfortBand.FromString,
    )


def _details(
    error: grpc.aio.AioRpcError,
) -> tuple[error_details_pb2.BadRequest, error_details_pb2.LocalizedMessage]:
    trailer = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    proto = status_pb2.Status.FromString(trailer)
    bad, localized = error_details_pb2.BadRequest(), error_details_pb2.LocalizedMessage()
    for detail in proto.details:
        if detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
        elif detail.Is(localized.DESCRIPTOR):
            detail.Unpack(localized)
    assert proto.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    return bad, localized


async def test_a_valid_request_reaches_the_servicer(running: Any) -> None:
    _, servicer, channel = running
    band = ComfortBand(lower_c=20, upper_c=24)
    assert await _call(channel, "Echo")(band) == band
    assert servicer.calls == 1


async def test_an_invalid_request_is_rejected_with_field_violations_before_the_servicer(
    running: Any,
) -> None:
    _, servicer, channel = running
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, "Echo")(ComfortBand(lower_c=-80, upper_c=math.nan))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad, localized = _details(caught.value)
    fields = sorted((v.field, v.reason) for v in bad.field_violations)
    assert fields == [
        ("lower_c", "double.gte_lte"),
        ("upper_c", "double.finite"),
        ("upper_c", "double.gte_lte"),
        ("upper_c", "upper_c.above_lower_c"),
    ]
    assert localized.locale == "en-US" and "lower_c" in localized.message
    assert servicer.calls == 0


async def test_an_invalid_message_in_a_client_stream_ends_the_call(running: Any) -> None:
    _, servicer, channel = running

    async def bands() -> AsyncIterator[ComfortBand]:
        yield ComfortBand(lower_c=20, upper_c=24)
        yield ComfortBand(lower_c=25, upper_c=21)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, "Sum", "stream_unary")(bands())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad, _ = _details(caught.value)
    assert [v.reason for v in bad.field_violations] == ["upper_c.above_lower_c"]
    assert servicer.calls == 1


async def test_a_bidirectional_stream_is_validated_message_by_message(running: Any) -> None:
    _, servicer, channel = running
    call = _call(channel, "Each", "stream_stream")()
    await call.write(ComfortBand(lower_c=20, upper_c=24))
    assert (await call.read()).upper_c == 24
    await call.write(ComfortBand(lower_c=20, upper_c=math.inf))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert servicer.calls == 1


async def test_health_serves_every_registered_service(running: Any) -> None:
    _, _, channel = running
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_shutdown_lets_rpcs_in_flight_finish_and_refuses_new_ones(running: Any) -> None:
    server, servicer, channel = running
    band = ComfortBand(lower_c=20, upper_c=24)
    in_flight = asyncio.ensure_future(_call(channel, "Slow")(band))
    while servicer.calls == 0:
        await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(server.stop(grace_s=10))
    await asyncio.sleep(0.2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, "Echo")(band, timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    servicer.release.set()
    assert await in_flight == band
    await stopping
