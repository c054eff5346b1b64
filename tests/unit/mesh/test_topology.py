"""The topology names callers precisely and hands out distinct ports."""

from __future__ import annotations

import re

import pytest

from meshctl.topology import Caller, Failover, Topology, allocate_ports

SERVICE = "spiffe://hvac.local/region/us-east/svc/gateway"
USER = "spiffe://hvac.local/user/alice"
DEVICE = "spiffe://hvac.local/device/b1/ahu-1"


@pytest.mark.parametrize(
    ("kind", "service", "matches", "rejects"),
    [
        (Caller.USER, None, [USER], [SERVICE, DEVICE, "spiffe://other.example/user/alice"]),
        (Caller.DEVICE, None, [DEVICE], [USER, SERVICE, DEVICE + "/extra"]),
        (Caller.SERVICE, "gateway", [SERVICE], [SERVICE.replace("gateway", "control"), USER]),
        (Caller.SERVICE, None, [SERVICE, SERVICE.replace("gateway", "audit")], [USER, DEVICE]),
    ],
)
def test_caller_patterns_match_whole_ids_of_their_kind_only(
    kind: Caller, service: str | None, matches: list[str], rejects: list[str]
) -> None:
    pattern = re.compile(kind.pattern(service))
    assert all(pattern.fullmatch(spiffe_id) for spiffe_id in matches)
    assert not any(pattern.fullmatch(spiffe_id) for spiffe_id in rejects)


def test_the_default_matrix_lets_users_reach_the_gateway_only() -> None:
    topology = Topology()
    user_services = {rule.service for rule in topology.rules if rule.kind is Caller.USER}
    assert user_services == {"gateway"}
    [device_rule] = [rule for rule in topology.rules if rule.kind is Caller.DEVICE]
    assert (device_rule.service, device_rule.methods) == ("control", ("Connect",))


def test_only_the_stateless_optimizer_is_active_active() -> None:
    modes = {spec.name: spec.failover for spec in Topology().services}
    assert modes.pop("optimizer") is Failover.ACTIVE_ACTIVE
    assert set(modes.values()) == {Failover.ACTIVE_PASSIVE}


def test_every_listener_of_every_region_gets_its_own_port() -> None:
    ports = allocate_ports(Topology())
    used = [
        port
        for region in ports.values()
        for port in (
            region.ingress,
            region.peer,
            region.admin,
            *region.services.values(),
            *region.egress.values(),
        )
    ]
    assert len(used) == len(set(used)) == 2 * (3 + 2 * 4)
