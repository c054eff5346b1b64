"""The audit servicer: translates protobuf to domain calls and back, nothing more.

The RPCs of `hvac.audit.v1.AuditService` are built by later work; until then each answers
UNIMPLEMENTED, after request validation.
"""

from __future__ import annotations

import contextlib

from hvac.audit.v1 import audit_service_pb2, audit_service_pb2_grpc

from meshkit import Service, static_services
from svc_audit.config import AuditConfig


def services(config: AuditConfig) -> contextlib.AbstractAsyncContextManager[list[Service]]:
    """The services this process serves, open for as long as the context is."""
    return static_services(
        Service.unimplemented(audit_service_pb2, audit_service_pb2_grpc, "AuditService")
    )
