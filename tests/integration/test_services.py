"""Each service starts as `python -m svc_x`, and operators can explore it with grpcurl."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from meshctl.catalog import SERVICES, grpcurl
from meshctl.processes import ServiceProcess
from meshkit.testing import PostgresServer, RedisServer


@pytest.fixture(scope="module")
def backends(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """DATABASE_URL (a fresh database) and REDIS_URL (a fresh key prefix) for the services."""
    url = asyncio.run(postgres_server.create_database("services"))
    namespace = redis_server.new_namespace()
    try:
        yield {
            "DATABASE_URL": url,
            "REDIS_URL": namespace.url,
            "HVAC_CONTROL_REDIS_PREFIX": namespace.prefix,
            "AUDIT_STATE_DIR": str(tmp_path_factory.mktemp("audit-state")),
        }
    finally:
        asyncio.run(postgres_server.drop_database(url))
        asyncio.run(redis_server.clear_namespace(namespace))


@pytest.fixture(scope="module", params=sorted(SERVICES))
def service(request: pytest.FixtureRequest, backends: dict[str, str]) -> Iterator[ServiceProcess]:
    process = ServiceProcess(request.param, env=backends).start()
    yield process
    assert process.stop() == 0, process.output()


def test_grpcurl_lists_the_service_health_and_reflection(service: ServiceProcess) -> None:
    result = grpcurl(service.address, "list")
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert {SERVICES[service.name], "grpc.health.v1.Health"} <= listed


def test_grpcurl_describes_the_service(service: ServiceProcess) -> None:
    result = grpcurl(service.address, "describe", SERVICES[service.name])
    assert result.returncode == 0, result.stderr
    assert f"{SERVICES[service.name]} is a service" in result.stdout
    assert "rpc " in result.stdout


def test_health_check_answers_serving(service: ServiceProcess) -> None:
    for name in ("", SERVICES[service.name]):
        result = grpcurl(
            "-d", json.dumps({"service": name}), service.address, "grpc.health.v1.Health/Check"
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"status": "SERVING"}


# A request each service accepts as valid (empty), for an RPC that is not built yet.
UNBUILT = {
    "gateway": "ListBuildings",
}


def test_an_unbuilt_rpc_answers_unimplemented_not_a_fake_success(service: ServiceProcess) -> None:
    if service.name not in UNBUILT:
        pytest.skip(f"every {service.name} RPC is built")
    method = f"{SERVICES[service.name]}/{UNBUILT[service.name]}"
    result = grpcurl("-d", "{}", service.address, method)
    assert result.returncode != 0
    assert "Code: Unimplemented" in result.stderr
    assert f"{method} is not implemented yet" in result.stderr


def test_sigterm_stops_the_service_gracefully() -> None:
    process = ServiceProcess("optimizer").start()
    assert process.stop() == 0
    assert process.process is not None and process.process.returncode == 0
