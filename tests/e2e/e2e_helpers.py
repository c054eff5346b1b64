"""Helpers of the e2e tests: the probe topology and clients of a running mesh.

Besides the four services the probe topology runs two test-only services
(``tests/e2e/probe_service.py``): ``probe`` says who called it and counts calls that reached its
servicer code; ``limited`` is the same program behind a tiny rate limit.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from google.protobuf import empty_pb2, wrappers_pb2

from meshctl.pki import service_id
from meshctl.status import ClientIdentity
from meshctl.topology import (
    Caller,
    RateLimit,
    Rule,
    ServiceSpec,
    Topology,
    default_rules,
    default_services,
)
from meshctl.up import ADMIN_USER, Mesh

PROBE_SERVICE = "hvac.test.v1.ProbeService"
PROBE_ARGV = (str(Path(__file__).with_name("probe_service.py")),)


def probe_topology() -> Topology:
    probes = (
        ServiceSpec("probe", PROBE_SERVICE, PROBE_ARGV),
        ServiceSpec("limited", PROBE_SERVICE, PROBE_ARGV, rate_limit=RateLimit(3, 1)),
    )
    rules = (
        Rule(Caller.USER, "probe"),
        Rule(Caller.SERVICE, "probe"),
        Rule(Caller.USER, "limited"),
    )
    return Topology(services=default_services() + probes, rules=default_rules() + rules)


def admin(mesh: Mesh) -> ClientIdentity:
    paths = mesh.pki.paths(f"user.{ADMIN_USER}")
    return ClientIdentity(mesh.pki.ca_cert, paths.cert, paths.key)


def service_identity(mesh: Mesh, region: str, service: str) -> ClientIdentity:
    """A certificate of ``service`` in ``region``, as that service would present."""
    paths = mesh.pki.issue(f"test.{region}.{service}", service_id(region, service))
    return ClientIdentity(mesh.pki.ca_cert, paths.cert, paths.key)


def ingress(mesh: Mesh, region: str = "us-east") -> str:
    return f"127.0.0.1:{mesh.ports[region].ingress}"


def egress_channel(mesh: Mesh, caller: str, target: str, region: str = "us-east") -> grpc.Channel:
    """What service ``caller`` uses to reach ``target``: its plaintext egress listener."""
    address = f"127.0.0.1:{mesh.ports[region].egress[caller]}"
    return grpc.insecure_channel(
        address, options=[("grpc.default_authority", f"{target}.hvac.local")]
    )


def who_am_i(channel: grpc.Channel, timeout_s: float = 5.0) -> str:
    call = channel.unary_unary(
        f"/{PROBE_SERVICE}/WhoAmI",
        request_serializer=empty_pb2.Empty.SerializeToString,
        response_deserializer=wrappers_pb2.StringValue.FromString,
    )
    reply: wrappers_pb2.StringValue = call(empty_pb2.Empty(), timeout=timeout_s)
    return reply.value


def probe_count(mesh: Mesh, region: str = "us-east", service: str = "probe") -> int:
    """WhoAmI calls that reached the probe's servicer code (asked directly, not via Envoy)."""
    address = f"127.0.0.1:{mesh.ports[region].services[service]}"
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            f"/{PROBE_SERVICE}/Count",
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=wrappers_pb2.Int64Value.FromString,
        )
        reply: wrappers_pb2.Int64Value = call(empty_pb2.Empty(), timeout=5)
        return reply.value
