"""The one builder of rich gRPC errors (``google.rpc.Status`` with details).

Every service answers bad input the same way: a status code, a human-readable message, and
machine-readable details a client in any language can unpack (``google.rpc.BadRequest``,
``google.rpc.LocalizedMessage``, ``google.rpc.RetryInfo``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DEFAULT_LOCALE = "en-US"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One broken rule: the request field path (``problem.zones[1].a``), why, and a rule id."""

    field: str
    description: str
    reason: str = ""


def rich_status(
    code: grpc.StatusCode,
    message: str,
    details: Iterable[Message] = (),
) -> grpc.Status:
    """A ``grpc.Status`` whose trailers carry ``google.rpc.Status`` with ``details`` packed in."""
    proto = status_pb2.Status(code=_rpc_code(code), message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        proto.details.append(packed)
    return rpc_status.to_status(proto)


def invalid_argument(
    violations: Sequence[FieldViolation], locale: str = DEFAULT_LOCALE
) -> grpc.Status:
    """``INVALID_ARGUMENT`` with one ``BadRequest`` field violation per broken rule."""
    summary = "; ".join(
        f"{v.field}: {v.description}" if v.field else v.description for v in violations
    )
    message = f"invalid request: {summary}" if summary else "invalid request"
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=v.field, description=v.description, reason=v.reason
            )
            for v in violations
        ]
    )
    localized = error_details_pb2.LocalizedMessage(locale=locale, message=message)
    return rich_status(grpc.StatusCode.INVALID_ARGUMENT, message, [bad_request, localized])


def retry_later(code: grpc.StatusCode, message: str, retry_delay_s: float) -> grpc.Status:
    """A status (``UNAVAILABLE``, ``RESOURCE_EXHAUSTED``) telling the client when to retry."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(retry_delay_s * 1e9))
    return rich_status(code, message, [error_details_pb2.RetryInfo(retry_delay=delay)])


async def abort(context: grpc.aio.ServicerContext, status: grpc.Status) -> NoReturn:
    """End the RPC with ``status``; never returns."""
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def _rpc_code(code: grpc.StatusCode) -> int:
    value: int = code.value[0]
    assert code_pb2.Code.Name(value)  # every grpc.StatusCode has a google.rpc.Code twin
    return value
