"""The running mesh: grpcurl through Envoy, mutual TLS, caller identity, RBAC, rate limits.

One mesh (both regions, real Envoy, PostgreSQL, Redis, the four services and two probes) serves
every test of this module.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from hvac.optimizer.v1 import optimizer_service_pb2, optimizer_service_pb2_grpc

from meshctl.catalog import GRPCURL, SERVICES
from meshctl.pki import CertificateAuthority, device_id, user_id
from meshctl.status import ClientIdentity, mesh_channel
from meshctl.topology import REGIONS
from meshctl.up import Mesh
from tests.e2e.e2e_helpers import (
    PROBE_SERVICE,
    admin,
    egress_channel,
    ingress,
    probe_count,
    service_identity,
    who_am_i,
)


def _grpcurl(
    mesh: Mesh, region: str, service: str, *verb: str, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    identity = admin(mesh)
    return subprocess.run(
        [
            GRPCURL,
            *("-cacert", str(identity.ca), "-cert", str(identity.cert), "-key", str(identity.key)),
            *("-authority", f"{service}.hvac.local", "-max-time", "10"),
            *flags,
            ingress(mesh, region),
            *verb,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_grpcurl_through_the_ingress_lists_describes_and_checks_each_service(
    mesh: Mesh, region: str, service: str
) -> None:
    full_name = SERVICES[service]
    listed = _grpcurl(mesh, region, service, "list")
    assert listed.returncode == 0, listed.stderr
    assert {full_name, "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = _grpcurl(mesh, region, service, "describe", full_name)
    assert described.returncode == 0, described.stderr
    assert f"{full_name} is a service" in described.stdout
    health = _grpcurl(
        mesh,
        region,
        service,
        "grpc.health.v1.Health/Check",
        flags=("-v", "-d", json.dumps({"service": full_name})),
    )
    assert health.returncode == 0, health.stderr
    assert '"status": "SERVING"' in health.stdout
    served_by = re.search(r"x-hvac-served-by: (\S+)", health.stdout)
    assert served_by is not None
    # Active-passive services answer from the region asked; the optimizer from either.
    expected = set(REGIONS) if service == "optimizer" else {region}
    assert served_by.group(1) in expected


# ------------------------------------------------------------------ mutual TLS


def _identity_files(
    tmp: Path, ca: CertificateAuthority, spiffe: str, **kw: object
) -> tuple[Path, Path]:
    issued = ca.issue(spiffe, **kw)  # type: ignore[arg-type]
    cert, key = tmp / "client.pem", tmp / "client.key"
    issued.write(cert, key)
    return cert, key


def _refused_channel(kind: str, mesh: Mesh, tmp: Path) -> grpc.Channel:
    """A channel to the us-east ingress whose client Envoy must turn away."""
    ours = mesh.pki.authority()
    if kind == "plaintext":
        return grpc.insecure_channel(
            ingress(mesh), options=[("grpc.default_authority", "probe.hvac.local")]
        )
    if kind == "no client certificate":
        return mesh_channel(ingress(mesh), "probe", ClientIdentity(mesh.pki.ca_cert, None, None))
    if kind == "certificate from another CA":
        cert, key = _identity_files(tmp, CertificateAuthority.create(), user_id("mallory"))
    elif kind == "expired certificate":
        start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        cert, key = _identity_files(
            tmp, ours, user_id("late"), lifetime=dt.timedelta(hours=1), not_before=start
        )
    else:  # a certificate of our CA naming an identity outside the trust domain
        cert, key = _identity_files(tmp, ours, "spiffe://elsewhere.example/user/mallory")
    return mesh_channel(ingress(mesh), "probe", ClientIdentity(mesh.pki.ca_cert, cert, key))


REFUSED = [
    "no client certificate",
    "certificate from another CA",
    "expired certificate",
    "wrong SAN",
    "plaintext",
]


@pytest.mark.parametrize("kind", REFUSED)
def test_envoy_refuses_a_caller_without_a_valid_mesh_certificate_before_any_servicer_runs(
    mesh: Mesh, kind: str, tmp_path: Path
) -> None:
    before = probe_count(mesh)
    with _refused_channel(kind, mesh, tmp_path) as channel, pytest.raises(grpc.RpcError) as caught:
        who_am_i(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert probe_count(mesh) == before
    # The same probe counts a call that is let through, so the count above could have moved.
    with mesh_channel(ingress(mesh), "probe", admin(mesh)) as channel:
        who_am_i(channel)
    assert probe_count(mesh) == before + 1


# ------------------------------------------------------------------ identity and RBAC


def test_a_service_learns_its_callers_spiffe_id_from_envoy(mesh: Mesh) -> None:
    with mesh_channel(ingress(mesh), "probe", admin(mesh)) as channel:
        assert who_am_i(channel) == "spiffe://hvac.local/user/admin"
    with egress_channel(mesh, "gateway", "probe") as channel:
        assert who_am_i(channel) == "spiffe://hvac.local/region/us-east/svc/gateway"


def test_a_direct_caller_cannot_claim_an_identity_with_the_header(mesh: Mesh) -> None:
    address = f"127.0.0.1:{mesh.ports['us-east'].services['probe']}"
    forged = (("x-forwarded-client-cert", "URI=spiffe://hvac.local/user/admin"),)
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(f"/{PROBE_SERVICE}/WhoAmI")
        from google.protobuf import empty_pb2, wrappers_pb2

        raw = call(empty_pb2.Empty().SerializeToString(), metadata=forged, timeout=5)
        assert wrappers_pb2.StringValue.FromString(raw).value == ""


def _list_solvers(channel: grpc.Channel) -> grpc.StatusCode:
    stub = optimizer_service_pb2_grpc.OptimizerServiceStub(channel)
    try:
        stub.ListSolvers(optimizer_service_pb2.ListSolversRequest(), timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_a_call_outside_the_rbac_matrix_is_permission_denied(mesh: Mesh) -> None:
    # Users may call the gateway only; the optimizer is for gateway and control.
    with mesh_channel(ingress(mesh), "optimizer", admin(mesh)) as channel:
        assert _list_solvers(channel) == grpc.StatusCode.PERMISSION_DENIED
    with egress_channel(mesh, "audit", "optimizer") as channel:
        assert _list_solvers(channel) == grpc.StatusCode.PERMISSION_DENIED
    # ...while control, which may, reaches the service (whatever the service answers).
    with egress_channel(mesh, "control", "optimizer") as channel:
        assert _list_solvers(channel) != grpc.StatusCode.PERMISSION_DENIED


def test_a_device_denied_by_rbac_never_reaches_servicer_code(mesh: Mesh, tmp_path: Path) -> None:
    cert, key = _identity_files(tmp_path, mesh.pki.authority(), device_id("b1", "ahu-1"))
    before = probe_count(mesh)
    identity = ClientIdentity(mesh.pki.ca_cert, cert, key)
    with (
        mesh_channel(ingress(mesh), "probe", identity) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        who_am_i(channel)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert probe_count(mesh) == before


def test_over_the_rate_limit_envoy_answers_resource_exhausted(mesh: Mesh) -> None:
    outcomes: list[grpc.StatusCode] = []
    with mesh_channel(ingress(mesh), "limited", admin(mesh)) as channel:

        def call(_: int) -> grpc.StatusCode:
            try:
                who_am_i(channel)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(call, range(12)))
    # A bucket of 3, refilled by 1 a second: most of 12 calls at once are turned away.
    assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 6
    assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_a_service_certificate_is_accepted_for_its_own_calls(mesh: Mesh) -> None:
    identity = service_identity(mesh, "eu-west", "control")
    with mesh_channel(ingress(mesh), "probe", identity) as channel:
        assert who_am_i(channel) == "spiffe://hvac.local/region/eu-west/svc/control"


# ------------------------------------------------------------------ certificate rotation


def _served_certificate(mesh: Mesh, region: str) -> x509.Certificate:
    """The certificate the ingress of ``region`` presents to a new connection."""
    identity = admin(mesh)
    context = ssl.create_default_context(cafile=str(identity.ca))
    assert identity.cert is not None and identity.key is not None
    context.load_cert_chain(str(identity.cert), str(identity.key))
    context.set_alpn_protocols(["h2"])
    port = mesh.ports[region].ingress
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="probe.hvac.local") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_rotated_certificates_are_served_without_restarting_envoy_and_calls_keep_working(
    mesh: Mesh,
) -> None:
    envoy_pids = {r: mesh.supervisor.pid(f"{r}/envoy") for r in REGIONS}
    old_serial = _served_certificate(mesh, "us-east").serial_number
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def steady_calls() -> None:
        nonlocal answered
        with mesh_channel(ingress(mesh), "probe", admin(mesh)) as channel:
            while not stop.is_set():
                try:
                    who_am_i(channel)
                    answered += 1
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")
                time.sleep(0.01)

    caller = threading.Thread(target=steady_calls)
    caller.start()
    try:
        mesh.rotate_certificates()
        issued = x509.load_pem_x509_certificate(mesh.pki.paths("us-east.envoy").cert.read_bytes())
        assert issued.serial_number != old_serial
        deadline = time.monotonic() + 30  # a guard against hangs, not a speed check
        while _served_certificate(mesh, "us-east").serial_number != issued.serial_number:
            assert time.monotonic() < deadline, "Envoy still serves the old certificate"
            time.sleep(0.1)
        calls_before = answered
        deadline = time.monotonic() + 30
        while answered < calls_before + 10:  # calls go on after the switch
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        caller.join(timeout=30)
    assert failures == []
    assert {r: mesh.supervisor.pid(f"{r}/envoy") for r in REGIONS} == envoy_pids
    # A new connection with the re-issued user certificate works too.
    with mesh_channel(ingress(mesh), "probe", admin(mesh)) as channel:
        assert who_am_i(channel) == "spiffe://hvac.local/user/admin"


# ------------------------------------------------------------------ the RBAC matrix

RBAC_DENIAL = "RBAC: access denied"  # Envoy's own answer, unlike any service's


def _call_through_egress(mesh: Mesh, caller: str, target: str, method: str) -> grpc.RpcError | None:
    """Call ``method`` of ``target`` as service ``caller`` with an empty request."""
    with egress_channel(mesh, caller, target) as channel:
        path = f"/{SERVICES[target]}/{method}"
        try:
            channel.unary_unary(path)(b"", timeout=10)
        except grpc.RpcError as exc:
            return exc
    return None


@pytest.mark.parametrize(
    ("caller", "target", "method", "allowed"),
    [
        ("gateway", "control", "ListBuildings", True),
        ("gateway", "optimizer", "ListSolvers", True),
        ("gateway", "audit", "GetCheckpoint", True),
        ("control", "optimizer", "ListSolvers", True),
        ("control", "audit", "GetCheckpoint", True),
        ("optimizer", "audit", "Append", True),
        ("optimizer", "audit", "GetCheckpoint", False),
        ("optimizer", "control", "ListBuildings", False),
        ("audit", "optimizer", "ListSolvers", False),
        ("control", "gateway", "ListBuildings", False),
    ],
)
def test_service_to_service_calls_follow_the_design_matrix(
    mesh: Mesh, caller: str, target: str, method: str, allowed: bool
) -> None:
    error = _call_through_egress(mesh, caller, target, method)
    denied = (
        error is not None
        and error.code() == grpc.StatusCode.PERMISSION_DENIED
        and error.details() == RBAC_DENIAL
    )
    assert denied is not allowed, error


def test_a_device_may_open_a_control_session_but_call_nothing_else(
    mesh: Mesh, tmp_path: Path
) -> None:
    cert, key = _identity_files(tmp_path, mesh.pki.authority(), device_id("b1", "ahu-2"))
    identity = ClientIdentity(mesh.pki.ca_cert, cert, key)
    with mesh_channel(ingress(mesh), "control", identity) as channel:
        connect = channel.stream_stream(f"/{SERVICES['control']}/Connect")
        try:
            list(connect(iter(()), timeout=10))
            connect_error = None
        except grpc.RpcError as exc:
            connect_error = exc
        with pytest.raises(grpc.RpcError) as listing:
            channel.unary_unary(f"/{SERVICES['control']}/ListBuildings")(b"", timeout=10)
    assert connect_error is None or connect_error.details() != RBAC_DENIAL
    assert listing.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert listing.value.details() == RBAC_DENIAL


def test_envoy_admin_serves_prometheus_metrics_on_loopback(mesh: Mesh) -> None:
    url = f"http://127.0.0.1:{mesh.ports['us-east'].admin}/stats/prometheus"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="svc_optimizer"}' in text
    assert 'envoy_http_rbac_denied{envoy_http_conn_manager_prefix="ingress"}' in text
