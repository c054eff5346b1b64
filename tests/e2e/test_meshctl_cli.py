"""``meshctl up`` / ``status`` / ``down`` as an operator runs them: nothing is left behind."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshctl.up import ENDPOINTS_FILE, PID_FILE, Endpoints
from meshkit.testing import PostgresServer, process_is_alive


@pytest.fixture
def cli_env(postgres_server: PostgresServer) -> Iterator[dict[str, str]]:
    """The environment ``meshctl`` runs in: as ours, but with a database of its own when
    ``DATABASE_URL`` names an external server (otherwise it starts an embedded one)."""
    env = dict(os.environ)
    if postgres_server.is_embedded:
        yield env
        return
    env["DATABASE_URL"] = asyncio.run(postgres_server.create_database("meshcli"))
    try:
        yield env
    finally:
        asyncio.run(postgres_server.drop_database(env["DATABASE_URL"]))


def _meshctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_then_down_leaves_no_process_and_no_listening_port(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    state = tmp_path / "state"
    try:
        up = _meshctl("up", "--state-dir", str(state), env=cli_env)
        assert up.returncode == 0, up.stdout + up.stderr
        endpoints = Endpoints.load(state)
        document = (state / ENDPOINTS_FILE).read_text()
        assert str(endpoints.admin_cert) in document and str(endpoints.ca) in document
        status = _meshctl("status", "--state-dir", str(state), env=cli_env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("SERVING") == 8  # four services, two regions
        pids = [int((state / PID_FILE).read_text()), *endpoints.pids.values()]
        ports = [
            port
            for region in endpoints.ports.values()
            for port in (
                region.ingress,
                region.peer,
                region.admin,
                *region.services.values(),
                *region.egress.values(),
            )
        ]
        assert all(process_is_alive(pid) for pid in pids)
        assert all(_listening(port) for port in ports)
    finally:
        down = _meshctl("down", "--state-dir", str(state), env=cli_env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "outlived" not in down.stdout  # everything stopped in order, nothing needed killing
    assert [pid for pid in pids if process_is_alive(pid)] == []
    assert [port for port in ports if _listening(port)] == []
    assert not (state / PID_FILE).exists() and not (state / ENDPOINTS_FILE).exists()


def test_status_without_a_running_mesh_says_so(tmp_path: Path) -> None:
    result = _meshctl("status", "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert "no mesh is running" in result.stdout


def test_issue_user_writes_a_certificate_with_the_role(tmp_path: Path) -> None:
    result = _meshctl(
        "certs", "issue-user", "dana", "--role", "auditor", "--state-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "pki" / "user.dana.pem").read_bytes())
    assert "OU=auditor" in cert.subject.rfc4514_string()


def test_envoy_render_writes_configs_envoy_accepts(tmp_path: Path) -> None:
    result = _meshctl("envoy", "render", "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in (tmp_path / "envoy").iterdir()) == [
        "eu-west.json",
        "us-east.json",
    ]
    assert result.stdout.count(": valid") == 2
