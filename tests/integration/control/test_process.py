"""`python -m svc_control` as an operator runs it: a clear refusal without its backends, and a
registry an operator can drive with grpcurl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import grpc
import pytest
from hvac.control.v1 import control_service_pb2_grpc as ctl_grpc

from meshctl.catalog import grpcurl
from meshctl.processes import ServiceProcess
from meshkit.testing import RedisNamespace
from tests.integration.control.resources import EdgeDevice, registered

pytestmark = pytest.mark.integration


def test_without_database_url_the_service_refuses_to_start_and_says_why() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "svc_control", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "DATABASE_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_operator_creates_and_reads_a_building_with_grpcurl(
    database_url: str, redis_namespace: RedisNamespace
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_namespace.url,
        "HVAC_CONTROL_REDIS_PREFIX": redis_namespace.prefix,
    }
    with ServiceProcess("control", env=env) as process:
        service = "hvac.control.v1.ControlService"
        building = {
            "building_id": "hq",
            "home_region": "REGION_EU_WEST",
            "floor_area_m2": 800,
            "time_zone": "Europe/Berlin",
            "tariff": {"currency_code": "EUR", "default_price_per_kwh": 0.25},
        }
        created = grpcurl(
            "-d", json.dumps({"building": building}), process.address, f"{service}/CreateBuilding"
        )
        assert created.returncode == 0, created.stderr
        again = grpcurl(
            "-d", json.dumps({"building": building}), process.address, f"{service}/CreateBuilding"
        )
        assert "Code: AlreadyExists" in again.stderr
        listed = grpcurl("-d", "{}", process.address, f"{service}/ListBuildings")
        assert listed.returncode == 0, listed.stderr
        [only] = json.loads(listed.stdout)["buildings"]
        assert (only["building_id"], only["control_interval"]) == ("hq", "900s")


async def test_sigterm_ends_open_device_sessions_with_unavailable(
    database_url: str, redis_namespace: RedisNamespace
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_namespace.url,
        "HVAC_CONTROL_REDIS_PREFIX": redis_namespace.prefix,
        "HVAC_SHUTDOWN_GRACE_S": "0.5",
    }
    with ServiceProcess("control", env=env) as process:
        async with grpc.aio.insecure_channel(process.address) as channel:
            stub = ctl_grpc.ControlServiceStub(channel)
            await registered(stub)
            device = EdgeDevice(stub)
            await device.hello()
            assert process.process is not None
            process.process.send_signal(signal.SIGTERM)
            assert (await device.error()).code() == grpc.StatusCode.UNAVAILABLE
            assert process.process.wait(30) == 0
