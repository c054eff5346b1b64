"""A test-only gRPC service for the mesh tests: says who called it and counts what reached it.

``hvac.test.v1.ProbeService/WhoAmI`` answers the caller's SPIFFE ID as ``meshkit.identity``
sees it (empty when unknown); ``Count`` answers how many WhoAmI calls reached servicer code.
Run as ``python tests/e2e/probe_service.py --port N``, like any service of the mesh.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
from google.protobuf import empty_pb2, wrappers_pb2

from meshkit import ServerConfig, Service, run_service, static_services
from meshkit.identity import caller_identity

SERVICE = "hvac.test.v1.ProbeService"


class Probe:
    def __init__(self) -> None:
        self.calls = 0

    async def who_am_i(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext
    ) -> wrappers_pb2.StringValue:
        self.calls += 1
        identity = caller_identity(context)
        return wrappers_pb2.StringValue(value=identity.spiffe_id if identity else "")

    async def count(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext
    ) -> wrappers_pb2.Int64Value:
        return wrappers_pb2.Int64Value(value=self.calls)


def _register(servicer: Any, server: grpc.aio.Server) -> None:
    def unary(behavior: Any, response: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=empty_pb2.Empty.FromString,
            response_serializer=response.SerializeToString,
        )

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "WhoAmI": unary(servicer.who_am_i, wrappers_pb2.StringValue),
            "Count": unary(servicer.count, wrappers_pb2.Int64Value),
        },
    )
    server.add_generic_rpc_handlers((handler,))


def main() -> int:
    return run_service(
        "probe", ServerConfig, lambda config: static_services(Service(SERVICE, Probe(), _register))
    )


if __name__ == "__main__":
    sys.exit(main())
