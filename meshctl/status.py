"""Reaching the mesh as a client: mTLS channels through an ingress, and ``meshctl status``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshctl.envoy_config import SERVED_BY_HEADER
from meshctl.pki import TRUST_DOMAIN


@dataclass(frozen=True)
class ClientIdentity:
    """A client's certificate and key, and the CA it trusts (all PEM files)."""

    ca: Path
    cert: Path | None
    key: Path | None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None,
        )


def authority(service: str, trust_domain: str = TRUST_DOMAIN) -> str:
    """The ``:authority`` of ``service``'s virtual host (``optimizer.hvac.local``)."""
    return f"{service}.{trust_domain}"


def mesh_channel(address: str, service: str, identity: ClientIdentity) -> grpc.Channel:
    """A channel to ``service`` through the ingress at ``address``, over mTLS."""
    name = authority(service)
    return grpc.secure_channel(
        address,
        identity.credentials(),
        options=[("grpc.ssl_target_name_override", name), ("grpc.default_authority", name)],
    )


@dataclass(frozen=True)
class HealthReport:
    """One health check through Envoy: the status (or the error) and the region that answered."""

    status: str
    served_by: str


def check_health(
    address: str, service: str, grpc_service: str, identity: ClientIdentity, timeout_s: float = 5
) -> HealthReport:
    """``grpc.health.v1.Health/Check`` of ``grpc_service`` through the ingress at ``address``."""
    with mesh_channel(address, service, identity) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply, call = stub.Check.with_call(
                health_pb2.HealthCheckRequest(service=grpc_service), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            return HealthReport(exc.code().name, "")
        headers = dict(call.initial_metadata() or ())
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return HealthReport(status, str(headers.get(SERVED_BY_HEADER, "")))


def run(state_dir: Path) -> int:
    """Print health per region and service; 0 when every service is SERVING (from its own
    region, unless it is active-active)."""
    from meshctl.topology import Failover, Topology
    from meshctl.up import ENDPOINTS_FILE, Endpoints

    if not (state_dir / ENDPOINTS_FILE).exists():
        print(f"no mesh is running from {state_dir} (no {ENDPOINTS_FILE})")
        return 1
    endpoints = Endpoints.load(state_dir)
    identity = ClientIdentity(endpoints.ca, endpoints.admin_cert, endpoints.admin_key)
    healthy = True
    print(f"{'region':<9} {'service':<10} {'ingress':<17} {'health':<12} served by")
    for region, ports in endpoints.ports.items():
        address = f"127.0.0.1:{ports.ingress}"
        for spec in Topology().services:
            report = check_health(address, spec.name, spec.grpc_service, identity)
            # Active-active services may answer from either region; the others from their own.
            local = report.served_by == region or spec.failover is Failover.ACTIVE_ACTIVE
            healthy &= report.status == "SERVING" and local
            print(
                f"{region:<9} {spec.name:<10} {address:<17} {report.status:<12} {report.served_by}"
            )
    return 0 if healthy else 1
