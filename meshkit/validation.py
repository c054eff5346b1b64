"""Request validation with protovalidate, as a server interceptor.

Every request message (and every message of a client stream) is checked against the rules in
its descriptor before any servicer code runs. A broken request ends the RPC with
``INVALID_ARGUMENT`` and one ``BadRequest`` field violation per broken rule.

Message-level (CEL) rules have no field of their own. By convention a rule whose id starts with
the name of one of the message's fields (``price_per_kwh.length``) is reported on that field,
so cross-field rules still point the caller at the field to fix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import protovalidate
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from meshkit.errors import FieldViolation, abort, invalid_argument

_validator = protovalidate.Validator()


def violations(message: Message) -> list[FieldViolation]:
    """The broken rules of ``message``, with dotted field paths (``zones[1].a``)."""
    found = _validator.collect_violations(message)
    return [_field_violation(v.proto, message.DESCRIPTOR) for v in found]


def _field_violation(proto: Any, root: Any) -> FieldViolation:
    parts: list[str] = []
    descriptor: Descriptor | None = root
    for element in proto.field.elements if proto.field is not None else []:
        name = element.field_name
        field: FieldDescriptor | None = (
            descriptor.fields_by_name.get(name) if descriptor is not None else None
        )
        descriptor = field.message_type if field is not None else None
        parts.append(name + _subscript(element))
    rule_id = proto.rule_id or ""
    head = rule_id.split(".", 1)[0]
    if descriptor is not None and head in descriptor.fields_by_name:
        parts.append(head)  # a message-level rule that names the field it is about
    return FieldViolation(field=".".join(parts), description=proto.message or "", reason=rule_id)


def _subscript(element: Any) -> str:
    """``[3]`` for a list index, ``["key"]`` for a map key, ``""`` for a plain field."""
    subscript = getattr(element, "subscript", None)
    if subscript is None:
        return ""
    if subscript.field == "string_key":
        return f'["{subscript.value}"]'
    if subscript.field == "bool_key":
        return f"[{str(subscript.value).lower()}]"
    return f"[{subscript.value}]"


async def _check(message: Message, context: grpc.aio.ServicerContext) -> None:
    broken = violations(message)
    if broken:
        await abort(context, invalid_argument(broken))


async def _validated_stream(
    requests: AsyncIterator[Message], context: grpc.aio.ServicerContext
) -> AsyncIterator[Message]:
    async for message in requests:
        await _check(message, context)
        yield message


Behavior = Callable[..., Any]


def _wrap_unary_request(behavior: Behavior, streaming_response: bool) -> Behavior:
    if streaming_response:

        async def unary_stream(request: Message, context: grpc.aio.ServicerContext) -> Any:
            await _check(request, context)
            async for response in _responses(behavior(request, context)):
                yield response

        return unary_stream

    async def unary_unary(request: Message, context: grpc.aio.ServicerContext) -> Any:
        await _check(request, context)
        return await behavior(request, context)

    return unary_unary


def _wrap_stream_request(behavior: Behavior, streaming_response: bool) -> Behavior:
    if streaming_response:

        async def stream_stream(requests: AsyncIterator[Message], context: Any) -> Any:
            async for response in _responses(
                behavior(_validated_stream(requests, context), context)
            ):
                yield response

        return stream_stream

    async def stream_unary(requests: AsyncIterator[Message], context: Any) -> Any:
        return await behavior(_validated_stream(requests, context), context)

    return stream_unary


async def _responses(result: Any) -> AsyncIterator[Any]:
    """Yield from an async generator, or await a coroutine that writes with ``context.write``."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif isinstance(result, Awaitable):
        await result


class ValidationInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Rejects invalid requests with ``INVALID_ARGUMENT`` before the servicer sees them."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary_request(handler.unary_unary, streaming_response=False),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_unary_request(handler.unary_stream, streaming_response=True),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_stream_request(handler.stream_unary, streaming_response=False),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream_request(handler.stream_stream, streaming_response=True),
            handler.request_deserializer,
            handler.response_serializer,
        )
