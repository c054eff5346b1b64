"""The gateway servicer: translates protobuf to domain calls and back, nothing more.

The RPCs of `hvac.gateway.v1.GatewayService` are built by later work; until then each answers
UNIMPLEMENTED, after request validation.
"""

from __future__ import annotations

import contextlib

from hvac.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc

from meshkit import Service, static_services
from svc_gateway.config import GatewayConfig


def services(config: GatewayConfig) -> contextlib.AbstractAsyncContextManager[list[Service]]:
    """The services this process serves, open for as long as the context is."""
    return static_services(
        Service.unimplemented(gateway_service_pb2, gateway_service_pb2_grpc, "GatewayService")
    )
