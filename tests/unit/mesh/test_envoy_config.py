"""Each region's Envoy bootstrap is valid for Envoy itself and says what the mesh promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meshctl.envoy_config import (
    StateLayout,
    cert_name,
    identities,
    render,
    validate,
    write_sds,
)
from meshctl.pki import Pki
from meshctl.topology import RegionPorts, Topology, allocate_ports

TOPOLOGY = Topology()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    layout = StateLayout(tmp_path_factory.mktemp("state"))
    pki = Pki(layout.pki)
    ports = allocate_ports(TOPOLOGY)
    paths = {}
    for region in TOPOLOGY.regions:
        secrets = {
            name: pki.issue(cert_name(region, name), spiffe_id)
            for name, spiffe_id in identities(TOPOLOGY, region).items()
        }
        write_sds(layout, region, secrets)
        paths[region] = render(TOPOLOGY, region, ports, layout)
    return paths


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [item for item in config["static_resources"]["listeners"] if item["name"] == name]
    return dict(found)


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return dict(manager)


def _cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in config["static_resources"]["clusters"] if c["name"] == name]
    return dict(found)


@pytest.mark.parametrize("region", TOPOLOGY.regions)
def test_envoy_accepts_the_rendered_bootstrap(rendered: dict[str, Path], region: str) -> None:
    result = validate(rendered[region])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_envoy_validation_rejects_a_broken_config(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    ports = allocate_ports(TOPOLOGY)
    east = ports["us-east"]
    ports["us-east"] = RegionPorts(70000, east.peer, east.admin, east.services, east.egress)
    result = validate(render(TOPOLOGY, "us-east", ports, layout))
    assert result.returncode != 0


def test_ingress_requires_a_client_certificate_from_the_trust_domain(
    rendered: dict[str, Path],
) -> None:
    ingress = _listener(_load(rendered["us-east"]), "ingress")
    tls = ingress["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    context = tls["common_tls_context"]
    assert context["alpn_protocols"] == ["h2"]
    assert context["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    [san] = context["validation_context"]["match_typed_subject_alt_names"]
    assert san == {"san_type": "URI", "matcher": {"prefix": "spiffe://hvac.local/"}}


def test_ingress_sets_the_caller_identity_header_and_answers_rate_limits_as_exhausted(
    rendered: dict[str, Path],
) -> None:
    manager = _hcm(_listener(_load(rendered["us-east"]), "ingress"))
    assert manager["forward_client_cert_details"] == "SANITIZE_SET"
    assert manager["set_current_client_cert_details"] == {"subject": True, "uri": True}
    filters = [f["name"] for f in manager["http_filters"]]
    assert filters == [
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
    ]
    assert manager["http_filters"][0]["typed_config"]["rate_limited_as_resource_exhausted"]


def test_one_virtual_host_per_service_selected_by_authority(rendered: dict[str, Path]) -> None:
    manager = _hcm(_listener(_load(rendered["us-east"]), "ingress"))
    hosts = {h["name"]: h["domains"] for h in manager["route_config"]["virtual_hosts"]}
    assert hosts == {
        name: [f"{name}.hvac.local", f"{name}.hvac.local:*"]
        for name in ("optimizer", "control", "audit", "gateway")
    }


def test_rbac_allows_only_the_design_matrix(rendered: dict[str, Path]) -> None:
    manager = _hcm(_listener(_load(rendered["us-east"]), "ingress"))
    rules = manager["http_filters"][1]["typed_config"]["rules"]
    assert rules.get("action", "ALLOW") == "ALLOW"  # anything no policy names is denied
    device = [p for name, p in rules["policies"].items() if "device" in name]
    assert len(device) == 1
    [path] = device[0]["permissions"][0]["or_rules"]["rules"]
    assert path["url_path"]["path"] == {"exact": "/hvac.control.v1.ControlService/Connect"}
    users = [p for name, p in rules["policies"].items() if "-user-" in name]
    assert [u["permissions"][0]["or_rules"]["rules"][0]["url_path"]["path"] for u in users] == [
        {"prefix": "/hvac.gateway.v1.GatewayService/"}
    ]


def test_active_active_optimizer_and_active_passive_control(rendered: dict[str, Path]) -> None:
    config = _load(rendered["us-east"])
    optimizer = _cluster(config, "svc_optimizer")
    assert "locality_weighted_lb_config" in optimizer["common_lb_config"]
    weights = {
        e["locality"]["region"]: (e.get("priority", 0), e["load_balancing_weight"])
        for e in optimizer["load_assignment"]["endpoints"]
    }
    assert weights == {"us-east": (0, 80), "eu-west": (0, 20)}
    control = _cluster(config, "svc_control")
    priorities = {
        e["locality"]["region"]: e.get("priority", 0)
        for e in control["load_assignment"]["endpoints"]
    }
    assert priorities == {"us-east": 0, "eu-west": 1}


def test_clusters_check_health_while_idle_and_retry_on_another_priority(
    rendered: dict[str, Path],
) -> None:
    config = _load(rendered["eu-west"])
    cluster = _cluster(config, "svc_control")
    [check] = cluster["health_checks"]
    assert check["grpc_health_check"]["service_name"] == "hvac.control.v1.ControlService"
    assert "no_traffic_interval" in check
    assert "outlier_detection" in cluster
    assert "retry_budget" in cluster["circuit_breakers"]["thresholds"][0]
    manager = _hcm(_listener(config, "ingress"))
    [host] = [h for h in manager["route_config"]["virtual_hosts"] if h["name"] == "control"]
    retry = host["routes"][0]["route"]["retry_policy"]
    assert retry["retry_priority"]["name"] == "envoy.retry_priorities.previous_priorities"
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    assert "per_try_timeout" in retry


def test_admin_listens_on_loopback_only(rendered: dict[str, Path]) -> None:
    config = _load(rendered["us-east"])
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    for listener in config["static_resources"]["listeners"]:
        assert listener["address"]["socket_address"]["address"] == "127.0.0.1"
