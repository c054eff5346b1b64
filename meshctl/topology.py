"""What the local mesh is made of: regions, services, who may call whom, and the ports.

Pure data and pure functions (no I/O): ``meshctl.envoy_config`` renders Envoy from it and
``meshctl.up`` starts processes from it. Tests build their own ``Topology`` (with a test-only
probe service, for instance) the same way.
"""

from __future__ import annotations

import enum
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from meshctl.catalog import SERVICES
from meshctl.pki import TRUST_DOMAIN

REGIONS: tuple[str, ...] = ("us-east", "eu-west")
HEALTH = "grpc.health.v1.Health"
REFLECTION_PREFIXES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


class Failover(enum.Enum):
    """How a service's two regions share its traffic."""

    ACTIVE_ACTIVE = "active-active"  # one priority, locality weights: both regions serve
    ACTIVE_PASSIVE = "active-passive"  # local region priority 0, the other priority 1


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``burst`` requests at once, refilled by ``per_second``."""

    burst: int
    per_second: int


@dataclass(frozen=True)
class ServiceSpec:
    """One service as the mesh sees it."""

    name: str
    grpc_service: str  # full name, also the name its health servicer reports
    argv: tuple[str, ...]  # the command, given ``--port N`` after it
    failover: Failover = Failover.ACTIVE_PASSIVE
    rate_limit: RateLimit | None = None  # per region ingress, in addition to the listener's

    @property
    def authority(self) -> str:
        """The ``:authority`` that selects this service's virtual host."""
        return f"{self.name}.{TRUST_DOMAIN}"


class Caller(enum.Enum):
    """Kinds of callers an RBAC rule can name, as SPIFFE ID patterns."""

    USER = "user"
    DEVICE = "device"
    SERVICE = "svc"

    def pattern(self, service: str | None = None, trust_domain: str = TRUST_DOMAIN) -> str:
        """A regular expression (RE2 and Python) matching this caller's SPIFFE IDs."""
        base = re.escape(f"spiffe://{trust_domain}/")
        if self is Caller.USER:
            return base + r"user/[a-z][a-z0-9-]*"
        if self is Caller.DEVICE:
            return base + r"device/[a-z][a-z0-9-]*/[a-z][a-z0-9-]*"
        name = re.escape(service) if service else r"[a-z][a-z0-9-]*"
        return base + r"region/[a-z][a-z0-9-]*/svc/" + name


@dataclass(frozen=True)
class Rule:
    """Callers of ``kind`` (a specific ``caller_service`` when set) may call ``methods`` of
    ``service``; an empty ``methods`` means every method of its API."""

    kind: Caller
    service: str
    methods: tuple[str, ...] = ()
    caller_service: str | None = None

    @property
    def caller_pattern(self) -> str:
        return self.kind.pattern(self.caller_service)


def default_services() -> tuple[ServiceSpec, ...]:
    """The four services of the mesh; the optimizer is stateless, so active-active."""
    return tuple(
        ServiceSpec(
            name=name,
            grpc_service=full_name,
            argv=("-m", f"svc_{name}"),
            failover=Failover.ACTIVE_ACTIVE if name == "optimizer" else Failover.ACTIVE_PASSIVE,
        )
        for name, full_name in SERVICES.items()
    )


def default_rules() -> tuple[Rule, ...]:
    """DESIGN's matrix: anything not listed is PERMISSION_DENIED."""
    svc = Caller.SERVICE
    return (
        Rule(svc, "control", caller_service="gateway"),
        Rule(svc, "optimizer", caller_service="gateway"),
        Rule(svc, "audit", caller_service="gateway"),
        Rule(svc, "optimizer", caller_service="control"),
        Rule(svc, "audit", caller_service="control"),
        Rule(Caller.DEVICE, "control", methods=("Connect",)),
        Rule(svc, "audit", methods=("Append", "AppendBatch")),  # every service appends
        Rule(Caller.USER, "gateway"),
    )


@dataclass(frozen=True)
class Topology:
    """Regions, services and the RBAC matrix of one mesh."""

    regions: tuple[str, ...] = REGIONS
    services: tuple[ServiceSpec, ...] = field(default_factory=default_services)
    rules: tuple[Rule, ...] = field(default_factory=default_rules)
    trust_domain: str = TRUST_DOMAIN
    ingress_rate_limit: RateLimit = RateLimit(burst=2000, per_second=1000)
    # Health checks and reflection (grpcurl list/describe) are open to every mesh identity.
    open_services: tuple[str, ...] = (HEALTH, *REFLECTION_PREFIXES)

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def other_regions(self, region: str) -> tuple[str, ...]:
        return tuple(r for r in self.regions if r != region)

    def rules_for(self, service: str) -> list[Rule]:
        return [rule for rule in self.rules if rule.service == service]


@dataclass(frozen=True)
class RegionPorts:
    """The loopback ports of one region."""

    ingress: int  # mTLS, for people, devices and services (through their egress)
    peer: int  # mTLS, only the other regions' Envoys: failover traffic, served locally
    admin: int  # Envoy admin, /stats/prometheus
    services: Mapping[str, int]  # each service's own plaintext port on loopback
    egress: Mapping[str, int]  # per service: its way out to the others, through Envoy

    def to_json(self) -> dict[str, object]:
        return {
            "ingress": self.ingress,
            "peer": self.peer,
            "admin": self.admin,
            "services": dict(self.services),
            "egress": dict(self.egress),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> RegionPorts:
        services = data["services"]
        egress = data["egress"]
        assert isinstance(services, dict) and isinstance(egress, dict)
        return cls(
            ingress=int(str(data["ingress"])),
            peer=int(str(data["peer"])),
            admin=int(str(data["admin"])),
            services={str(k): int(v) for k, v in services.items()},
            egress={str(k): int(v) for k, v in egress.items()},
        )


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def allocate_ports(topology: Topology) -> dict[str, RegionPorts]:
    """Fresh ports for every listener of every region."""
    names = [s.name for s in topology.services]
    per_region = 3 + 2 * len(names)
    ports = iter(free_ports(per_region * len(topology.regions)))
    allocated: dict[str, RegionPorts] = {}
    for region in topology.regions:
        ingress, peer, admin = next(ports), next(ports), next(ports)
        services = {name: next(ports) for name in names}
        egress = {name: next(ports) for name in names}
        allocated[region] = RegionPorts(ingress, peer, admin, services, egress)
    return allocated


def method_paths(spec: ServiceSpec, methods: Iterable[str]) -> list[str]:
    """gRPC ``:path`` values of ``methods`` of ``spec``."""
    return [f"/{spec.grpc_service}/{method}" for method in methods]
