"""The control servicer: translates protobuf to domain calls and back, nothing more.

The RPCs of `hvac.control.v1.ControlService` are built by later work; until then each answers
UNIMPLEMENTED, after request validation.
"""

from __future__ import annotations

import contextlib

from hvac.control.v1 import control_service_pb2, control_service_pb2_grpc

from meshkit import Service, static_services
from svc_control.config import ControlConfig


def services(config: ControlConfig) -> contextlib.AbstractAsyncContextManager[list[Service]]:
    """The services this process serves, open for as long as the context is."""
    return static_services(
        Service.unimplemented(control_service_pb2, control_service_pb2_grpc, "ControlService")
    )
