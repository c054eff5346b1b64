"""The optimizer servicer: translates protobuf to domain calls and back, nothing more.

The RPCs of `hvac.optimizer.v1.OptimizerService` are built by later work; until then each answers
UNIMPLEMENTED, after request validation.
"""

from __future__ import annotations

import contextlib

from hvac.optimizer.v1 import optimizer_service_pb2, optimizer_service_pb2_grpc

from meshkit import Service, static_services
from svc_optimizer.config import OptimizerConfig


def services(config: OptimizerConfig) -> contextlib.AbstractAsyncContextManager[list[Service]]:
    """The services this process serves, open for as long as the context is."""
    return static_services(
        Service.unimplemented(optimizer_service_pb2, optimizer_service_pb2_grpc, "OptimizerService")
    )
