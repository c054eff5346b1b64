from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from meshkit.errors import FieldViolation, invalid_argument, retry_later


def _status(status: grpc.Status) -> status_pb2.Status:
    trailer = dict(status.trailing_metadata)["grpc-status-details-bin"]
    return status_pb2.Status.FromString(trailer)


def test_invalid_argument_carries_one_field_violation_per_rule_and_a_localized_message() -> None:
    status = invalid_argument(
        [
            FieldViolation("problem.zones[0].a", "must be at most 1", "double.gt_lte"),
            FieldViolation("", "zone ids must be unique", "zones.unique_zone_id"),
        ]
    )
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    proto = _status(status)
    assert proto.code == 3 and proto.message == status.details
    bad, localized = error_details_pb2.BadRequest(), error_details_pb2.LocalizedMessage()
    assert proto.details[0].Unpack(bad) and proto.details[1].Unpack(localized)
    assert [(v.field, v.reason) for v in bad.field_violations] == [
        ("problem.zones[0].a", "double.gt_lte"),
        ("", "zones.unique_zone_id"),
    ]
    assert localized.locale == "en-US"
    assert "problem.zones[0].a: must be at most 1" in localized.message


def test_retry_later_tells_the_client_when_to_come_back() -> None:
    status = retry_later(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit", 1.5)
    proto = _status(status)
    info = error_details_pb2.RetryInfo()
    assert proto.details[0].Unpack(info)
    assert info.retry_delay.ToNanoseconds() == 1_500_000_000
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
