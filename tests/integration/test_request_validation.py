"""Invalid requests to the real services get INVALID_ARGUMENT with the right field paths.

The servicers answer UNIMPLEMENTED for every valid request, so an INVALID_ARGUMENT answer shows
that validation ran, and decided, before any servicer code.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from hvac.audit.v1 import audit_service_pb2 as aud
from hvac.audit.v1 import audit_service_pb2_grpc as audit_grpc
from hvac.audit.v1 import records_pb2
from hvac.common.v1 import common_pb2
from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import control_service_pb2_grpc as ctl_grpc
from hvac.control.v1 import resources_pb2
from hvac.optimizer.v1 import optimizer_service_pb2 as opt
from hvac.optimizer.v1 import optimizer_service_pb2_grpc as opt_grpc
from hvac.optimizer.v1 import schedule_problem_pb2 as sp

from meshkit import RunningServer, serve
from meshkit.testing import RedisNamespace
from svc_audit.config import AuditConfig
from svc_audit.service import services as audit_services
from svc_control.config import ControlConfig
from svc_control.service import services as control_services
from svc_optimizer.config import OptimizerConfig
from svc_optimizer.service import services as optimizer_services


def _zone(zone_id: str, steps: int) -> sp.ZoneProblem:
    return sp.ZoneProblem(
        zone_id=zone_id,
        a=0.9,
        b_c_per_kw=0.5,
        c=0.1,
        initial_temperature_c=20,
        comfort=[common_pb2.ComfortBand(lower_c=20, upper_c=24)] * steps,
        gain_c=[0.1] * steps,
        power_levels_kw=[0, 1, 2, 3],
        min_on_steps=1,
        min_off_steps=1,
        switching_penalty=0.01,
    )


def solve_request(zones: int = 2, steps: int = 4) -> opt.SolveRequest:
    return opt.SolveRequest(
        problem=sp.ScheduleProblem(
            step=duration_pb2.Duration(seconds=900),
            horizon_steps=steps,
            zones=[_zone(f"z{i}", steps) for i in range(zones)],
            outdoor_temperature_c=[5.0] * steps,
            price_per_kwh=[0.1] * steps,
            peak_power_cap_kw=[10.0] * steps,
            discomfort_weight_per_kelvin_hour=1.0,
        )
    )


@pytest.fixture
async def optimizer() -> AsyncIterator[opt_grpc.OptimizerServiceStub]:
    async with optimizer_services(OptimizerConfig()) as built:
        server: RunningServer = await serve(built)
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield opt_grpc.OptimizerServiceStub(channel)
        await server.stop(0)


async def _violations(call: Any) -> list[tuple[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    trailer = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    bad = error_details_pb2.BadRequest()
    for detail in status_pb2.Status.FromString(trailer).details:
        if detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
    return sorted((v.field, v.reason) for v in bad.field_violations)


async def test_a_valid_solve_request_passes_validation(
    optimizer: opt_grpc.OptimizerServiceStub,
) -> None:
    responses = [r async for r in optimizer.Solve(solve_request())]
    assert responses[-1].final


def _drop_problem(r: opt.SolveRequest) -> None:
    r.ClearField("problem")


def _nan_price(r: opt.SolveRequest) -> None:
    r.problem.price_per_kwh[2] = math.nan


def _short_prices(r: opt.SolveRequest) -> None:
    del r.problem.price_per_kwh[-1]


def _short_zone_gains(r: opt.SolveRequest) -> None:
    del r.problem.zones[1].gain_c[-1]


def _hot_zone(r: opt.SolveRequest) -> None:
    r.problem.zones[1].a = 1.5


def _descending_levels(r: opt.SolveRequest) -> None:
    r.problem.zones[0].power_levels_kw[:] = [3, 2, 1]


def _inverted_band(r: opt.SolveRequest) -> None:
    r.problem.zones[0].comfort[3].lower_c = 30


def _too_many_zones(r: opt.SolveRequest) -> None:
    r.problem.zones.extend(_zone(f"x{i}", 4) for i in range(63))


def _bad_zone_id(r: opt.SolveRequest) -> None:
    r.problem.zones[0].zone_id = "Zone 1"


CASES: dict[str, tuple[Callable[[opt.SolveRequest], None], list[tuple[str, str]]]] = {
    "missing problem": (_drop_problem, [("problem", "required")]),
    "NaN price": (
        _nan_price,
        [
            ("problem.price_per_kwh[2]", "double.finite"),
            ("problem.price_per_kwh[2]", "double.gte_lte"),
        ],
    ),
    "price array shorter than the horizon": (
        _short_prices,
        [("problem.price_per_kwh", "price_per_kwh.length")],
    ),
    "zone gain array shorter than the horizon": (
        _short_zone_gains,
        [("problem.zones", "zones.gain_length")],
    ),
    "out-of-range model coefficient": (_hot_zone, [("problem.zones[1].a", "double.gt_lte")]),
    "descending power levels": (
        _descending_levels,
        [("problem.zones[0].power_levels_kw", "power_levels_kw.ascending")],
    ),
    "comfort band upside down": (
        _inverted_band,
        [("problem.zones[0].comfort[3].upper_c", "upper_c.above_lower_c")],
    ),
    "oversized zone list": (_too_many_zones, [("problem.zones", "repeated.max_items")]),
    "malformed identifier": (_bad_zone_id, [("problem.zones[0].zone_id", "string.pattern")]),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_an_invalid_solve_request_names_each_broken_field(
    optimizer: opt_grpc.OptimizerServiceStub, case: str
) -> None:
    breaks, expected = CASES[case]
    request = solve_request()
    breaks(request)
    assert await _violations(optimizer.Solve(request)) == sorted(expected)


@pytest.fixture
async def control(
    database_url: str, redis_namespace: RedisNamespace
) -> AsyncIterator[ctl_grpc.ControlServiceStub]:
    config = ControlConfig(
        database_url=database_url,
        redis_url=redis_namespace.url,
        redis_key_prefix=redis_namespace.prefix,
    )
    async with control_services(config) as built:
        server = await serve(built)
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield ctl_grpc.ControlServiceStub(channel)
        await server.stop(0)


@pytest.fixture
async def audit(database_url: str, tmp_path: Path) -> AsyncIterator[audit_grpc.AuditServiceStub]:
    async with audit_services(AuditConfig(database_url=database_url, state_dir=tmp_path)) as built:
        server = await serve(built)
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield audit_grpc.AuditServiceStub(channel)
        await server.stop(0)


async def _unary_violations(call: Any) -> list[tuple[str, str]]:
    async def once() -> AsyncIterator[Any]:
        yield await call

    return await _violations(once())


async def test_a_building_missing_required_fields_names_each_one(
    control: ctl_grpc.ControlServiceStub,
) -> None:
    request = ctl.CreateBuildingRequest(building=resources_pb2.Building(building_id="b1"))
    assert await _unary_violations(control.CreateBuilding(request)) == [
        ("building.floor_area_m2", "floor_area_m2.required"),
        ("building.home_region", "home_region.required"),
        ("building.tariff", "tariff.required"),
        ("building.time_zone", "time_zone.required"),
    ]


async def test_a_malformed_request_id_is_rejected(control: ctl_grpc.ControlServiceStub) -> None:
    request = ctl.CreateBuildingRequest(request_id="not-a-uuid")
    assert await _unary_violations(control.CreateBuilding(request)) == [
        ("building", "required"),
        ("request_id", "string.uuid"),
    ]


def _event(i: int) -> records_pb2.AuditEvent:
    event = records_pb2.AuditEvent(
        event_id=str(uuid.UUID(int=i + 1)),
        actor="spiffe://hvac.local/region/us-east/svc/control",
        action="control.plan.applied",
        resource="buildings/b1",
        outcome=records_pb2.OUTCOME_SUCCESS,
    )
    event.occurred_time.GetCurrentTime()
    return event


async def test_a_valid_append_passes_validation(audit: audit_grpc.AuditServiceStub) -> None:
    ack = await audit.Append(aud.AppendRequest(event=_event(0)))
    assert ack.sequence == 1


async def test_an_oversized_batch_is_rejected(audit: audit_grpc.AuditServiceStub) -> None:
    request = aud.AppendBatchRequest(events=[_event(i) for i in range(1001)])
    assert await _unary_violations(audit.AppendBatch(request)) == [("events", "repeated.max_items")]


async def test_an_event_with_a_bad_actor_and_oversized_attribute_names_both(
    audit: audit_grpc.AuditServiceStub,
) -> None:
    event = _event(0)
    event.actor = "user:alice"
    event.attributes["note"] = "x" * 100_000
    violations = await _unary_violations(audit.Append(aud.AppendRequest(event=event)))
    assert [field for field, _ in violations] == ["event.actor", 'event.attributes["note"]']
