"""Device sessions of the control service: telemetry ingest, command delivery, resumption.

Two control instances on one PostgreSQL (embedded unless DATABASE_URL / REDIS_URL are set), one
building of 10 zones served by one gateway. Figures:

- telemetry stored per second on one session (samples pipelined, each acknowledged after its
  transaction commits), and the sample -> TelemetryAck round trip one at a time;
- one control interval's commands (10 zones) from ``SessionHub.issue_commands`` to the device;
- resumption: a device away while 500 commands were issued reconnects to the *other* instance;
  time from Hello to the last of them received.

Goals are set against what buildings need (a sample a minute, a 7-day offline backlog to
replay, a control interval of minutes) with wide margins, since the control loop shares the cores.

Run: ``.venv/bin/python -m bench.control_sessions``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2
from hvac.common.v1 import common_pb2
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import control_service_pb2_grpc as ctl_grpc
from hvac.control.v1 import resources_pb2

from bench.report import Figure, write
from meshkit import serve
from meshkit.testing import postgres_server_from_env, redis_server_from_env
from svc_control.config import ControlConfig
from svc_control.registry import NewCommand
from svc_control.service import ControlServicer, services

ZONES = [f"z{i}" for i in range(10)]
SAMPLES = 2000
ROUND_TRIPS = 300
INTERVALS = 100
AWAY_COMMANDS = 500


@asynccontextmanager
async def _instance(
    config: ControlConfig,
) -> AsyncIterator[tuple[ctl_grpc.ControlServiceStub, ControlServicer]]:
    async with services(config) as built:
        server = await serve(built, config)
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                yield ctl_grpc.ControlServiceStub(channel), built[0].servicer
        finally:
            await server.stop(0)


async def _register(stub: ctl_grpc.ControlServiceStub) -> None:
    await stub.CreateBuilding(
        ctl.CreateBuildingRequest(
            building=resources_pb2.Building(
                building_id="bench",
                home_region=common_pb2.REGION_US_EAST,
                floor_area_m2=1000,
                time_zone="UTC",
                tariff=resources_pb2.Tariff(currency_code="EUR", default_price_per_kwh=0.2),
            )
        )
    )
    for zone_id in ZONES:
        await stub.CreateZone(
            ctl.CreateZoneRequest(
                zone=resources_pb2.Zone(
                    building_id="bench",
                    zone_id=zone_id,
                    floor_area_m2=100,
                    comfort=resources_pb2.ComfortSchedule(
                        occupied=common_pb2.ComfortBand(lower_c=21, upper_c=24),
                        unoccupied=common_pb2.ComfortBand(lower_c=15, upper_c=30),
                    ),
                    safe_band=resources_pb2.SafeBand(min_c=5, max_c=35),
                    equipment=resources_pb2.Equipment(
                        kind=resources_pb2.EQUIPMENT_KIND_HEATING,
                        power_stages_kw=[0, 1, 2],
                        min_on_duration=duration_pb2.Duration(seconds=180),
                    ),
                )
            )
        )
    await stub.RegisterDevice(
        ctl.RegisterDeviceRequest(
            device=resources_pb2.Device(
                building_id="bench",
                device_id="gw",
                kind=resources_pb2.DEVICE_KIND_BMS_GATEWAY,
                zone_ids=ZONES,
            )
        )
    )


async def _hello(stub: ctl_grpc.ControlServiceStub, last_applied: int) -> Any:
    call = stub.Connect()
    await call.write(
        ctl.ConnectRequest(
            hello=ctl.Hello(
                building_id="bench",
                device_id="gw",
                last_applied_sequence=last_applied,
                firmware_version="1.0",
            )
        )
    )
    await call.read()  # Welcome
    return call


async def _read(call: Any, kind: str) -> ctl.ConnectResponse:
    while True:
        message: ctl.ConnectResponse = await call.read()
        if message.WhichOneof("payload") == kind:
            return message


def _sample(sequence: int) -> ctl.ConnectRequest:
    sample = ctl.Telemetry(
        sequence=sequence,
        readings=[resources_pb2.ZoneReading(zone_id=z, temperature_c=21.0) for z in ZONES],
        outdoor_temperature_c=5.0,
    )
    sample.sample_time.FromDatetime(datetime.now(UTC) - timedelta(seconds=1))
    return ctl.ConnectRequest(telemetry=sample)


def _interval() -> list[NewCommand]:
    start = datetime.now(UTC)
    return [
        NewCommand(z, 21.0, 24.0, 1, 1.0, start, start + timedelta(minutes=15), 1, "bench")
        for z in ZONES
    ]


async def _measure(database_url: str, redis_url: str, prefix: str) -> list[Figure]:
    base: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_key_prefix": prefix,
        "control_loop": False,  # the benchmark issues the commands itself
    }
    config_a = ControlConfig(**base, region="us-east")
    config_b = ControlConfig(**base, region="eu-west")
    async with _instance(config_a) as (stub_a, servicer_a), _instance(config_b) as (stub_b, _):
        await _register(stub_a)
        call = await _hello(stub_a, 0)

        async def acks() -> None:
            for _ in range(SAMPLES):
                await _read(call, "telemetry_ack")

        started = time.perf_counter()
        reading = asyncio.create_task(acks())
        for sequence in range(1, SAMPLES + 1):
            await call.write(_sample(sequence))
        await reading
        ingest_per_s = SAMPLES / (time.perf_counter() - started)

        round_trips_ms = []
        for sequence in range(SAMPLES + 1, SAMPLES + ROUND_TRIPS + 1):
            began = time.perf_counter()
            await call.write(_sample(sequence))
            await _read(call, "telemetry_ack")
            round_trips_ms.append((time.perf_counter() - began) * 1000)

        delivery_ms = []
        for _ in range(INTERVALS):
            began = time.perf_counter()
            await servicer_a.hub.issue_commands("bench", _interval())
            for _ in ZONES:
                await _read(call, "setpoint_command")
            delivery_ms.append((time.perf_counter() - began) * 1000)
        delivered = INTERVALS * len(ZONES)
        call.cancel()

        for _ in range(AWAY_COMMANDS // len(ZONES)):
            await servicer_a.hub.issue_commands("bench", _interval())
        began = time.perf_counter()
        moved = await _hello(stub_b, delivered)
        for _ in range(AWAY_COMMANDS):
            await _read(moved, "setpoint_command")
        resume_ms = (time.perf_counter() - began) * 1000
        moved.cancel()

    p50 = statistics.median(round_trips_ms)
    p99 = statistics.quantiles(delivery_ms, n=100)[98]
    return [
        # A device sends a sample a minute and buffers up to 7 days (10,080 samples) offline:
        # 100/s replays such a backlog in under 2 minutes.
        Figure(
            "telemetry stored per s, one session",
            ingest_per_s,
            "samples/s",
            ">= 100",
            ingest_per_s >= 100,
        ),
        Figure("telemetry round trip p50", p50, "ms", "<= 20", p50 <= 20),
        Figure(
            "interval of 10 commands delivered p50",
            statistics.median(delivery_ms),
            "ms",
            "<= 50",
            statistics.median(delivery_ms) <= 50,
        ),
        Figure("interval of 10 commands delivered p99", p99, "ms", "<= 200", p99 <= 200),
        Figure(
            f"resume {AWAY_COMMANDS} commands on the other instance",
            resume_ms,
            "ms",
            "<= 1000",
            resume_ms <= 1000,
        ),
    ]


async def _run() -> list[Figure]:
    with postgres_server_from_env() as postgres, redis_server_from_env() as redis:
        async with postgres.database("bench") as url, redis.namespace("bench") as namespace:
            return await _measure(url, namespace.url, namespace.prefix)


def main() -> int:
    figures = asyncio.run(_run())
    write(
        "control_sessions",
        figures,
        {
            "zones": len(ZONES),
            "samples": SAMPLES,
            "round_trips": ROUND_TRIPS,
            "intervals": INTERVALS,
            "away_commands": AWAY_COMMANDS,
        },
    )
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
