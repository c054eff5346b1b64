"""Bad input gets INVALID_ARGUMENT (RESOURCE_EXHAUSTED past the size limit) and writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hvac.audit.v1 import audit_service_pb2 as pb

from svc_audit.testing import ServedAudit, make_event

UNKNOWN_FIELD = b"\xf8\x06\x01"  # field 111, varint 1: not in this version of the contract


async def _count(audit: ServedAudit) -> int:
    return (await audit.runtime.store.head()).sequence


def _violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return [v.field for v in bad.field_violations]
    return []


async def _raw_append(audit: ServedAudit, method: str, payload: bytes) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(audit.address) as channel:
        call = channel.unary_unary(f"/hvac.audit.v1.AuditService/{method}")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(payload)
    return caught.value


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    size, encoded = len(payload), bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        encoded.append(byte | (0x80 if size else 0))
        if not size:
            break
    return bytes([field_number << 3 | 2]) + bytes(encoded) + payload


async def test_an_unknown_field_in_the_request_is_refused(audit: ServedAudit) -> None:
    payload = pb.AppendRequest(event=make_event(1)).SerializeToString() + UNKNOWN_FIELD
    error = await _raw_append(audit, "Append", payload)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(error) == ["(request)"]
    assert await _count(audit) == 0


async def test_an_unknown_field_inside_a_batched_event_is_refused_by_its_path(
    audit: ServedAudit,
) -> None:
    good = make_event(1).SerializeToString()
    bad = make_event(2).SerializeToString() + UNKNOWN_FIELD
    error = await _raw_append(
        audit, "AppendBatch", _length_delimited(1, good) + _length_delimited(1, bad)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(error) == ["events[1]"]
    assert await _count(audit) == 0


async def test_an_oversized_attribute_is_invalid_and_writes_nothing(audit: ServedAudit) -> None:
    event = make_event(1)
    event.attributes["note"] = "x" * 1025
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.Append(pb.AppendRequest(event=event))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ['event.attributes["note"]']
    assert await _count(audit) == 0


async def test_a_request_over_the_message_limit_is_resource_exhausted(audit: ServedAudit) -> None:
    events = [make_event(n) for n in range(200)]
    for event in events:
        for k in range(32):
            event.attributes[f"k{k}"] = "x" * 1024  # ~33 KiB each, ~6.6 MiB in all
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.AppendBatch(pb.AppendBatchRequest(events=events))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await _count(audit) == 0


async def test_a_batch_with_one_bad_event_is_refused_whole(audit: ServedAudit) -> None:
    bad = make_event(2)
    bad.actor = "user:alice"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.AppendBatch(pb.AppendBatchRequest(events=[make_event(1), bad]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ["events[1].actor"]
    assert await _count(audit) == 0


async def test_an_event_id_twice_in_a_batch_is_refused(audit: ServedAudit) -> None:
    event = make_event(1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.AppendBatch(pb.AppendBatchRequest(events=[event, event]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await _count(audit) == 0


async def test_an_event_from_the_future_is_refused(audit: ServedAudit) -> None:
    event = make_event(1, occurred=datetime.now(UTC) + timedelta(hours=2))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.Append(pb.AppendRequest(event=event))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ["event.occurred_time"]


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("VerifyChain", pb.VerifyChainRequest(start_sequence=5, end_sequence=2), "start_sequence"),
        ("Query", pb.QueryRequest(page_size=10_001), "page_size"),
        ("Query", pb.QueryRequest(page_size=-1), "page_size"),
    ],
)
async def test_invalid_ranges_name_their_field(
    audit: ServedAudit, method: str, request_: object, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        call = getattr(audit.stub, method)(request_)
        if method == "Query":
            async for _ in call:
                pass
        else:
            await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == [field]


async def test_a_report_period_ending_before_it_starts_is_invalid(audit: ServedAudit) -> None:
    request = pb.GetComplianceReportRequest()
    request.time_range.start_time.FromDatetime(datetime(2026, 2, 1, tzinfo=UTC))
    request.time_range.end_time.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.GetComplianceReport(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ["time_range.end_time"]
