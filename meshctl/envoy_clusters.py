"""Envoy clusters of one region: where each service's traffic goes, and how failures are handled.

- ``svc_<name>``: what the ingress routes to. The local instance (plaintext HTTP/2 on loopback)
  and, for every other region, that region's *peer* listener (mTLS between Envoys). Active-active
  services share one priority with locality weights; active-passive ones put the local region at
  priority 0 and the others at priority 1.
- ``local_<name>``: what the peer listener routes to: the local instance only, so a failover
  request is never sent on to a third Envoy or back.
- ``egress_<name>``: the service's way out: its region's own ingress, over mTLS with the
  service's certificate, so the ingress applies RBAC to the calling service's identity.

Every cluster speaks HTTP/2 upstream, checks health with the gRPC health protocol (also while
idle: ``no_traffic_interval``), ejects outliers, and limits concurrency and retries with
circuit breakers and a retry budget.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from envoy_data_plane.envoy.config.cluster.v3 import (
    CircuitBreakers,
    CircuitBreakersThresholds,
    CircuitBreakersThresholdsRetryBudget,
    Cluster,
    ClusterCommonLbConfig,
    ClusterCommonLbConfigLocalityWeightedLbConfig,
    ClusterDiscoveryType,
    ClusterLbPolicy,
    ClusterTransportSocketMatch,
    OutlierDetection,
)
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    BindConfig,
    HealthCheck,
    HealthCheckGrpcHealthCheck,
    Http2ProtocolOptions,
    Locality,
    Metadata,
    SocketAddress,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions,
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.envoy.type.v3 import Percent
from envoy_data_plane.google.protobuf import Any as AnyProto
from envoy_data_plane.google.protobuf import Struct

from meshctl.envoy_tls import upstream_mtls
from meshctl.pki import envoy_id
from meshctl.topology import Failover, RegionPorts, ServiceSpec, Topology

# Endpoint metadata: which region an endpoint is in (Envoy reports it in a response header),
# and whether it is reached over mTLS (another region's Envoy) or plaintext loopback.
METADATA_NAMESPACE = "hvac"
_TLS_MATCH = "envoy.transport_socket_match"
# Envoy connects to local services from this loopback address, and services trust
# x-forwarded-client-cert only from it (meshkit.identity).
ENVOY_SOURCE_ADDRESS = "127.0.0.2"
LOCAL_WEIGHT = 80  # active-active: the share of requests the local region keeps
REMOTE_WEIGHT = 20


@dataclass(frozen=True)
class HealthTiming:
    """How often and how strictly endpoints are checked."""

    interval: dt.timedelta = dt.timedelta(seconds=1)
    timeout: dt.timedelta = dt.timedelta(seconds=1)
    no_traffic_interval: dt.timedelta = dt.timedelta(seconds=2)
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1


def loopback(port: int) -> Address:
    return Address(socket_address=SocketAddress(address="127.0.0.1", port_value=port))


def _endpoint(port: int, region: str, tls: bool) -> LbEndpoint:
    metadata = {METADATA_NAMESPACE: Struct.from_dict({"region": region})}
    if tls:
        metadata[_TLS_MATCH] = Struct.from_dict({"peer": region})
    return LbEndpoint(
        endpoint=Endpoint(address=loopback(port), hostname=f"{region}"),
        metadata=Metadata(filter_metadata=metadata),
    )


def _http2_only() -> dict[str, AnyProto]:
    options = HttpProtocolOptions(
        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
            http2_protocol_options=Http2ProtocolOptions()
        )
    )
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": AnyProto.pack(options)}


def _health_check(spec: ServiceSpec, timing: HealthTiming) -> HealthCheck:
    return HealthCheck(
        timeout=timing.timeout,
        interval=timing.interval,
        no_traffic_interval=timing.no_traffic_interval,
        interval_jitter=dt.timedelta(milliseconds=100),
        unhealthy_threshold=timing.unhealthy_threshold,
        healthy_threshold=timing.healthy_threshold,
        grpc_health_check=HealthCheckGrpcHealthCheck(
            service_name=spec.grpc_service, authority=spec.authority
        ),
    )


def _resilience() -> tuple[OutlierDetection, CircuitBreakers]:
    # consecutive_5xx keeps Envoy's default (5): betterproto2 cannot spell that field's name.
    # Gateway failures (connection refused or reset, 502-504) eject a host at once after two in a
    # row; Envoy only counts them unless told to enforce.
    outliers = OutlierDetection(
        consecutive_gateway_failure=2,
        enforcing_consecutive_gateway_failure=100,
        interval=dt.timedelta(seconds=1),
        base_ejection_time=dt.timedelta(seconds=5),
        max_ejection_percent=100,
    )
    breakers = CircuitBreakers(
        thresholds=[
            CircuitBreakersThresholds(
                max_connections=1024,
                max_pending_requests=1024,
                max_requests=4096,
                retry_budget=CircuitBreakersThresholdsRetryBudget(
                    budget_percent=Percent(value=25.0), min_retry_concurrency=10
                ),
            )
        ]
    )
    return outliers, breakers


def _cluster(
    name: str, spec: ServiceSpec, localities: list[LocalityLbEndpoints], timing: HealthTiming
) -> Cluster:
    outliers, breakers = _resilience()
    return Cluster(
        name=name,
        type=ClusterDiscoveryType.STATIC,
        connect_timeout=dt.timedelta(milliseconds=500),
        lb_policy=ClusterLbPolicy.ROUND_ROBIN,
        typed_extension_protocol_options=_http2_only(),
        load_assignment=ClusterLoadAssignment(cluster_name=name, endpoints=localities),
        health_checks=[_health_check(spec, timing)],
        outlier_detection=outliers,
        circuit_breakers=breakers,
        upstream_bind_config=BindConfig(
            source_address=SocketAddress(address=ENVOY_SOURCE_ADDRESS, port_value=0)
        ),
    )


def service_cluster(
    topology: Topology,
    region: str,
    spec: ServiceSpec,
    ports: dict[str, RegionPorts],
    pki_dir: Path,
    sds_dir: Path,
    timing: HealthTiming,
) -> Cluster:
    """``svc_<name>``: the local instance first (or weighted), other regions on failure."""
    active_active = spec.failover is Failover.ACTIVE_ACTIVE
    localities = [
        LocalityLbEndpoints(
            locality=Locality(region=region),
            lb_endpoints=[_endpoint(ports[region].services[spec.name], region, tls=False)],
            load_balancing_weight=LOCAL_WEIGHT if active_active else None,
            priority=0,
        )
    ]
    localities += [
        LocalityLbEndpoints(
            locality=Locality(region=other),
            lb_endpoints=[_endpoint(ports[other].peer, other, tls=True)],
            load_balancing_weight=REMOTE_WEIGHT if active_active else None,
            priority=0 if active_active else 1,
        )
        for other in topology.other_regions(region)
    ]
    cluster = _cluster(f"svc_{spec.name}", spec, localities, timing)
    # With one host per region, "panic" (routing to unhealthy hosts once half are down) would
    # send calls to a dead instance; never panic. Health changes reach the workers at once
    # (by default they are merged for a second, during which a newly healthy region is unused).
    cluster.common_lb_config = ClusterCommonLbConfig(
        healthy_panic_threshold=Percent(value=0.0), update_merge_window=dt.timedelta(0)
    )
    if active_active:
        cluster.common_lb_config.locality_weighted_lb_config = (
            ClusterCommonLbConfigLocalityWeightedLbConfig()
        )
    # Each remote endpoint must prove it is that region's Envoy; local ones stay plaintext.
    cluster.transport_socket_matches = [
        ClusterTransportSocketMatch(
            name=f"peer-{other}",
            match=Struct.from_dict({"peer": other}),
            transport_socket=upstream_mtls(
                sds_dir, "envoy", pki_dir / "ca.pem", envoy_id(other), spec.authority
            ),
        )
        for other in topology.other_regions(region)
    ]
    return cluster


def local_cluster(
    region: str, spec: ServiceSpec, ports: dict[str, RegionPorts], timing: HealthTiming
) -> Cluster:
    """``local_<name>``: only this region's instance (the target of failover requests)."""
    locality = LocalityLbEndpoints(
        locality=Locality(region=region),
        lb_endpoints=[_endpoint(ports[region].services[spec.name], region, tls=False)],
    )
    return _cluster(f"local_{spec.name}", spec, [locality], timing)


def egress_cluster(
    region: str, caller: ServiceSpec, ports: dict[str, RegionPorts], pki_dir: Path, sds_dir: Path
) -> Cluster:
    """``egress_<name>``: this region's ingress, entered with ``caller``'s certificate."""
    name = f"egress_{caller.name}"
    _, breakers = _resilience()
    return Cluster(
        name=name,
        type=ClusterDiscoveryType.STATIC,
        connect_timeout=dt.timedelta(milliseconds=500),
        typed_extension_protocol_options=_http2_only(),
        load_assignment=ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                LocalityLbEndpoints(
                    locality=Locality(region=region),
                    lb_endpoints=[_endpoint(ports[region].ingress, region, tls=False)],
                )
            ],
        ),
        transport_socket=upstream_mtls(
            sds_dir, f"svc-{caller.name}", pki_dir / "ca.pem", envoy_id(region), caller.authority
        ),
        circuit_breakers=breakers,
    )
