"""The control servicer: translates protobuf to domain calls and back, nothing more.

The RPCs of `hvac.control.v1.ControlService` are built by later work; until then each answers
UNIMPLEMENTED (the generated base class does exactly that), after request validation.
"""

from __future__ import annotations

import contextlib

from hvac.control.v1 import control_service_pb2, control_service_pb2_grpc

from meshkit import Service, static_services
from svc_control.config import ControlConfig


class ControlServicer(control_service_pb2_grpc.ControlServiceServicer):  # type: ignore[misc]
    """No RPC is implemented yet: each answers UNIMPLEMENTED."""


def services(config: ControlConfig) -> contextlib.AbstractAsyncContextManager[list[Service]]:
    """The services this process serves, open for as long as the context is."""
    servicer = ControlServicer()
    return static_services(
        Service.generated(control_service_pb2, control_service_pb2_grpc, "ControlService", servicer)
    )
