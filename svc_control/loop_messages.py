"""What one control interval takes in and sends out, without I/O: the stored telemetry it learns
from, and the commands, the plan and the audit event it produces.

The control loop (`svc_control.loop`) turns each `Decision` into
- one `NewCommand` per zone, valid for the interval (`commands_of`),
- the published `Plan`: the optimizer's whole horizon with the envelope's first step, or the
  thermostat's single step for a fallback (`plan_of`),
- one audit event: `control.plan.applied` for an optimized interval, `control.plan.fell_back`
  (outcome FAILURE, with the reason) for a fallback, `control.override.applied` for commands
  re-issued at once after an override changed (`audit_event`).

Times given as seconds are the loop's clock; `published` is the wall-clock time of publication.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from hvac.audit.v1 import records_pb2
from hvac.control.v1 import control_service_pb2, resources_pb2
from hvac.optimizer.v1 import schedule_problem_pb2

from svc_control.controller import Decision
from svc_control.envelope import Source, ZoneCommand
from svc_control.optimizer_client import SolveOutcome
from svc_control.registry import NewCommand
from svc_control.telemetry import TelemetrySample, ZoneReading

ACTION_APPLIED = "control.plan.applied"
ACTION_FELL_BACK = "control.plan.fell_back"
ACTION_OVERRIDE = "control.override.applied"
THERMOSTAT = "thermostat"


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits; sorts by creation."""
    random = secrets.randbits(74)
    value = (time.time_ns() // 1_000_000) << 80
    value |= 0x7 << 76 | (random >> 62) << 64 | 0b10 << 62 | (random & ((1 << 62) - 1))
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _at(time_s: float) -> datetime:
    return datetime.fromtimestamp(time_s, UTC)


def command_of(
    command: ZoneCommand, plan_id: str, valid_from_s: float, valid_until_s: float
) -> NewCommand:
    """The command to issue for one zone of a decision."""
    from_plan = command.source in (Source.PLAN, Source.FALLBACK_THERMOSTAT)
    return NewCommand(
        zone_id=command.zone_id,
        heating_setpoint_c=command.heating_setpoint_c,
        cooling_setpoint_c=command.cooling_setpoint_c,
        power_stage=command.stage,
        power_kw=command.power_kw,
        valid_from_time=_at(valid_from_s),
        valid_until_time=_at(valid_until_s),
        source=int(command.source),
        plan_id=plan_id if from_plan else "",
        override_id="" if from_plan else command.override_id or "",
    )


def commands_of(
    decision: Decision, plan_id: str, valid_until_s: float, zone_ids: Sequence[str] | None = None
) -> list[NewCommand]:
    """One command per zone (or per zone of `zone_ids`), valid from the decision's time."""
    return [
        command_of(c, plan_id, decision.time_s, valid_until_s)
        for c in decision.envelope.commands
        if zone_ids is None or c.zone_id in zone_ids
    ]


def plan_of(
    building_id: str,
    plan_id: str,
    decision: Decision,
    step_s: float,
    published: datetime,
    problem: schedule_problem_pb2.ScheduleProblem | None,
    outcome: SolveOutcome | None,
) -> resources_pb2.Plan:
    """The plan to publish: the horizon the optimizer planned, whose first step is what the
    envelope commanded; or, for a fallback, the thermostat's one step."""
    optimized = decision.fallback_reason is None and problem is not None and outcome is not None
    plan = resources_pb2.Plan(
        plan_id=plan_id,
        building_id=building_id,
        status=(
            resources_pb2.PLAN_STATUS_OPTIMIZED if optimized else resources_pb2.PLAN_STATUS_FALLBACK
        ),
        solver_backend=outcome.backend if optimized and outcome is not None else THERMOSTAT,
        fallback_reason=decision.fallback_reason or "",
        envelope_adjustments=decision.envelope.adjustments,
    )
    plan.create_time.FromDatetime(published)
    plan.step.FromNanoseconds(round(step_s * 1e9))
    steps = 1
    planned: Mapping[str, schedule_problem_pb2.ZoneSchedule] = {}
    if optimized and outcome is not None and outcome.schedule is not None and problem is not None:
        steps = problem.horizon_steps
        planned = {z.zone_id: z for z in outcome.schedule.zones}
        if outcome.objective is not None:
            plan.objective = outcome.objective.total
            plan.expected_cost = outcome.objective.energy_cost
            plan.expected_energy_kwh = outcome.objective.energy_kwh
            plan.expected_discomfort_kelvin_hours = outcome.objective.discomfort_kelvin_hours
    plan.horizon.start_time.FromDatetime(_at(decision.time_s))
    plan.horizon.end_time.FromDatetime(_at(decision.time_s + steps * step_s))
    comfort = {z.zone_id: z.comfort for z in problem.zones} if problem is not None else {}
    for command in decision.envelope.commands:
        zone = plan.zones.add(zone_id=command.zone_id)
        first = zone.steps.add(
            power_stage=command.stage,
            power_kw=command.power_kw,
            heating_setpoint_c=command.heating_setpoint_c,
            cooling_setpoint_c=command.cooling_setpoint_c,
        )
        first.start_time.FromDatetime(_at(decision.time_s))
        schedule = planned.get(command.zone_id)
        if schedule is None:
            continue
        if schedule.temperature_c:
            first.predicted_temperature_c = schedule.temperature_c[0]
        bands = comfort[command.zone_id]
        for k in range(1, steps):
            step = zone.steps.add(
                power_stage=schedule.level_index[k],
                power_kw=schedule.power_kw[k],
                heating_setpoint_c=bands[k].lower_c,
                cooling_setpoint_c=bands[k].upper_c,
                predicted_temperature_c=schedule.temperature_c[k],
            )
            step.start_time.FromDatetime(_at(decision.time_s + k * step_s))
    return plan


def audit_event(
    actor: str,
    action: str,
    building_id: str,
    plan: resources_pb2.Plan | None,
    attributes: Mapping[str, str],
    occurred: datetime,
    failed: bool = False,
) -> records_pb2.AuditEvent:
    """The audit event of an interval or override re-issue (no personal data: only ids,
    figures and reasons)."""
    resource = f"buildings/{building_id}"
    if plan is not None:
        resource += f"/plans/{plan.plan_id}"
    event = records_pb2.AuditEvent(
        event_id=uuid7(),
        actor=actor,
        action=action,
        resource=resource,
        building_id=building_id,
        outcome=records_pb2.OUTCOME_FAILURE if failed else records_pb2.OUTCOME_SUCCESS,
        attributes={k: v[:1024] for k, v in attributes.items()},
    )
    event.occurred_time.FromDatetime(occurred)
    return event


def interval_attributes(
    plan: resources_pb2.Plan, decision: Decision, outcome: SolveOutcome | None, issued: int
) -> dict[str, str]:
    """What an interval's audit event records beside the plan's id."""
    found = {
        "plan_id": plan.plan_id,
        "interval_start": _at(decision.time_s).isoformat(),
        "status": resources_pb2.PlanStatus.Name(plan.status),
        "solver": plan.solver_backend,
        "commands_issued": str(issued),
        "envelope_adjustments": str(plan.envelope_adjustments),
    }
    if decision.fallback_reason is not None:
        found["fallback_reason"] = decision.fallback_reason
    if outcome is not None:
        found["solve_s"] = f"{outcome.elapsed_s:.3f}"
        if outcome.problem_sha256:
            found["problem_sha256"] = outcome.problem_sha256
        if outcome.schedule is not None:
            found["objective"] = f"{plan.objective:.6g}"
            found["final"] = "true" if outcome.final else "false"
    for command in decision.envelope.commands:
        found[f"zone.{command.zone_id}"[:63]] = (
            f"stage={command.stage} heat={command.heating_setpoint_c:.2f}"
            f" cool={command.cooling_setpoint_c:.2f} source={command.source.name.lower()}"
        )
    return dict(list(found.items())[:32])


def telemetry_sample(sample: control_service_pb2.Telemetry) -> TelemetrySample:
    """A stored telemetry message as the controller takes it (what comes in each interval)."""
    occupancy = {
        resources_pb2.OCCUPANCY_OCCUPIED: True,
        resources_pb2.OCCUPANCY_UNOCCUPIED: False,
    }
    return TelemetrySample(
        time_s=sample.sample_time.ToNanoseconds() / 1e9,
        readings=tuple(
            ZoneReading(
                r.zone_id,
                r.temperature_c,
                occupancy.get(r.occupancy),
                r.power_kw if r.HasField("power_kw") else None,
                r.power_stage if r.HasField("power_stage") else None,
            )
            for r in sample.readings
        ),
        outdoor_temperature_c=(
            sample.outdoor_temperature_c if sample.HasField("outdoor_temperature_c") else None
        ),
    )
