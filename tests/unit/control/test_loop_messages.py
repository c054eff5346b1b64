"""What the control loop sends out for a decision: commands, plans and audit events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import protovalidate
from hvac.audit.v1 import records_pb2
from hvac.control.v1 import resources_pb2

from sim.devices import registration
from sim.offices import five_zone_office
from sim.prices import time_of_use
from svc_control import loop_messages as messages
from svc_control.controller import BuildingController
from svc_control.envelope import Override, OverrideKind
from svc_control.plant import BuildingPlant

MONDAY_8H_S = datetime(2026, 1, 12, 8, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
ACTOR = "spiffe://hvac.local/region/eu-west/svc/control"


def controller() -> BuildingController:
    building, zones = registration(five_zone_office(), "office", time_of_use())
    return BuildingController(BuildingPlant.from_proto(building, zones), horizon_steps=8)


def test_event_ids_are_version_7_uuids_in_creation_order() -> None:
    ids = [messages.uuid7() for _ in range(50)]
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert [str(u) for u in parsed] == ids  # lower-case canonical form
    stamps = [u.int >> 80 for u in parsed]
    assert stamps == sorted(stamps)


def test_a_fallback_plan_has_one_step_per_zone_and_says_why() -> None:
    decision = controller().decide(MONDAY_8H_S, fallback_reason="optimizer missed the deadline")
    published = datetime(2026, 11, 27, tzinfo=UTC)
    plan = messages.plan_of("office", "p-1", decision, 900.0, published, None, None)
    assert plan.status == resources_pb2.PLAN_STATUS_FALLBACK
    assert (plan.solver_backend, plan.fallback_reason) == (
        "thermostat",
        "optimizer missed the deadline",
    )
    assert [len(z.steps) for z in plan.zones] == [1] * 5
    assert plan.horizon.end_time.ToSeconds() - plan.horizon.start_time.ToSeconds() == 900
    commands = messages.commands_of(decision, "p-1", MONDAY_8H_S + 900.0)
    assert [c.zone_id for c in commands] == [z.zone_id for z in plan.zones]
    assert {c.source for c in commands} == {resources_pb2.COMMAND_SOURCE_FALLBACK_THERMOSTAT}
    assert all(c.plan_id == "p-1" and not c.override_id for c in commands)


def test_override_commands_name_the_override_not_the_plan() -> None:
    hold = Override("o-1", OverrideKind.SETPOINT, MONDAY_8H_S - 60, MONDAY_8H_S + 3600, "north",
                    22.0, 25.0)  # fmt: skip
    decision = controller().decide(MONDAY_8H_S, [hold])
    [north] = messages.commands_of(decision, "p-2", MONDAY_8H_S + 900.0, ["north"])
    assert (north.source, north.override_id, north.plan_id) == (
        resources_pb2.COMMAND_SOURCE_OVERRIDE,
        "o-1",
        "",
    )


def test_audit_events_of_every_kind_are_valid_for_the_audit_service() -> None:
    decision = controller().decide(MONDAY_8H_S, fallback_reason="optimizer unreachable")
    published = datetime.now(UTC)
    plan = messages.plan_of("office", messages.uuid7(), decision, 900.0, published, None, None)
    attributes = messages.interval_attributes(plan, decision, None, 5)
    fell_back = messages.audit_event(
        ACTOR, messages.ACTION_FELL_BACK, "office", plan, attributes, published, failed=True
    )
    override = messages.audit_event(
        ACTOR, messages.ACTION_OVERRIDE, "office", None, {"zones": "north"}, published
    )
    for event in (fell_back, override):
        protovalidate.validate(event)
    assert fell_back.outcome == records_pb2.OUTCOME_FAILURE
    assert fell_back.resource == f"buildings/office/plans/{plan.plan_id}"
    assert fell_back.attributes["fallback_reason"] == "optimizer unreachable"
    assert fell_back.attributes["zone.north"].startswith("stage=")
