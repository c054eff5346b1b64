"""The MPC loop: every control interval, for every building this instance controls, decide and act.

Per building and interval (the building's `control_interval`, 15 min by default, in the time of
the loop's `Clock`, so it runs in real time or in accelerated simulated time):

1. learn: telemetry stored since the last interval goes into the building's
   `BuildingController` (state estimate, identified zone models, outdoor forecast);
2. plan: the controller's `ScheduleProblem` goes to the optimizer (`Solve` stream, deadline);
3. decide: the optimizer's schedule, or the fallback thermostat when the optimizer failed, is
   unreachable or late, passes through the safety envelope, overrides winning;
4. act: `SessionHub.issue_commands`, then the `Plan` is published (WatchPlans), then the decision
   goes to audit through the durable outbox.

A building is never left without control: a fallback interval still commands every zone, is
counted (`fallbacks`, and FallbackStats over the published plans) and audited. An error in one
building's interval (database down) is logged and retried at the next interval; it never stops
the loop. `on_overrides_changed` re-applies the envelope at once after an override is created or
cancelled, so an operator's override reaches the devices without waiting for the interval.

Which buildings: those whose home region is this instance's, plus any whose latest plan is older
than `takeover_intervals` intervals (its home region stopped controlling it: failover).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from hvac.audit.v1 import records_pb2
from hvac.control.v1 import resources_pb2
from hvac.optimizer.v1 import schedule_problem_pb2

from svc_control import loop_messages as messages
from svc_control import metrics
from svc_control.clock import Clock
from svc_control.controller import BuildingController, Decision
from svc_control.envelope import Override, Proposal, ZoneInput, apply_envelope
from svc_control.mpc import ScheduleMismatch, proposals_from_schedule
from svc_control.optimizer_client import OptimizerClient, SolveOutcome
from svc_control.plant import BuildingPlant
from svc_control.registry import Page
from svc_control.sessions import REGION_BY_NAME, SessionHub
from svc_control.store import Store

log = logging.getLogger("svc_control.loop")

# Identification looks back 4 days; replaying that much history rebuilds a controller.
HISTORY = timedelta(days=4)
NO_OPTIMIZER = "no optimizer configured"


class AuditSink(Protocol):
    """Where decisions go for audit: `meshkit.outbox.Outbox` (durable, at least once)."""

    async def put_async(self, event: records_pb2.AuditEvent) -> None: ...


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs; see `ControlConfig` for the variables behind them."""

    region: str
    actor: str  # SPIFFE ID written as the audit actor
    discovery_interval_s: float = 60.0  # clock seconds between looks for new buildings
    horizon_steps: int = 96
    takeover_intervals: float = 3.0
    control_interval_s: float | None = None  # None: each building's own control_interval


@dataclass
class _Building:
    controller: BuildingController
    plant_key: tuple[str, ...]
    next_tick_s: float
    telemetry_after: datetime
    proposals: list[Proposal] | None = None  # this interval's, before overrides
    override_ids: dict[str, str | None] = field(default_factory=dict)  # last issued per zone
    plan_id: str = ""  # of the interval's plan, named by re-issued plan commands
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ControlLoop:
    """The loop of one control instance. `run()` until cancelled; `interval()` for one step."""

    def __init__(
        self,
        store: Store,
        hub: SessionHub,
        publish: Callable[[resources_pb2.Plan], Awaitable[None]],
        clock: Clock,
        settings: LoopSettings,
        optimizer: OptimizerClient | None = None,
        audit: AuditSink | None = None,
        wall_now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.hub = hub
        self.publish = publish
        self.clock = clock
        self.settings = settings
        self.optimizer = optimizer
        self.audit = audit
        self.wall_now = wall_now
        self.buildings: dict[str, _Building] = {}
        self.intervals = 0
        self.fallbacks = 0
        self.last_fallback_reason = ""
        self.audit_failures = 0
        self._next_discovery_s = float("-inf")

    # ------------------------------------------------------------------ scheduling

    async def run(self) -> None:
        """Control every building until cancelled."""
        while True:
            now_s = self.clock.now_s()
            if now_s >= self._next_discovery_s:
                try:
                    await self.discover(now_s)
                except Exception:
                    log.exception("listing buildings failed; retrying at the next look")
                self._next_discovery_s = now_s + self.settings.discovery_interval_s
            due = [b for b, s in self.buildings.items() if s.next_tick_s <= now_s]
            await asyncio.gather(*(self._tick(b, now_s) for b in due))
            wake_s = min(
                [s.next_tick_s for s in self.buildings.values()] + [self._next_discovery_s]
            )
            await self.clock.sleep_until(wake_s)

    async def _tick(self, building_id: str, now_s: float) -> None:
        state = self.buildings.get(building_id)
        if state is None:
            return
        step_s = state.controller.plant.control_interval_s
        state.next_tick_s += step_s
        if state.next_tick_s <= now_s:  # fell behind (slow machine, fast clock): skip ahead
            state.next_tick_s = now_s + step_s
        try:
            await self.interval(building_id, now_s)
        except Exception:
            log.exception("control interval failed", extra={"building": building_id})

    async def discover(self, now_s: float) -> None:
        """Start controlling buildings this instance owns now; forget deleted ones."""
        found: set[str] = set()
        after: tuple[str, ...] = ()
        while True:
            page, more = await self.store.list_buildings(Page(after, 500), 0)
            for building in page:
                if await self._owns(building):
                    found.add(building.building_id)
                    if building.building_id not in self.buildings:
                        await self._load(building.building_id, now_s, now_s)
            if not more:
                break
            after = (page[-1].building_id,)
        for gone in set(self.buildings) - found:
            del self.buildings[gone]

    async def _owns(self, building: resources_pb2.Building) -> bool:
        if building.home_region == REGION_BY_NAME[self.settings.region]:
            return True
        if building.building_id in self.buildings:
            return True  # taken over earlier: keep it until its home region plans again
        latest = await self.store.latest_plan(building.building_id)
        if latest is None:
            return False
        interval_s = (
            building.control_interval.ToTimedelta().total_seconds()
            if building.HasField("control_interval")
            else 900.0
        )
        silent = self.wall_now() - latest.create_time.ToDatetime(UTC)
        return silent > timedelta(seconds=self.settings.takeover_intervals * interval_s)

    # ------------------------------------------------------------------ one interval

    async def interval(self, building_id: str, now_s: float) -> Decision | None:
        """Run one control interval of `building_id` at clock time `now_s` (see module); None
        for a building without zones, which has nothing to control."""
        state = await self._load(building_id, now_s, now_s)
        if not state.controller.plant.zones:
            return None
        async with state.lock:
            controller = state.controller
            await self._learn(building_id, state, now_s)
            overrides = await self._overrides(building_id, now_s)
            problem: schedule_problem_pb2.ScheduleProblem | None = None
            outcome: SolveOutcome | None = None
            reason = NO_OPTIMIZER
            try:
                problem = controller.problem(now_s)
            except Exception as error:  # a model or forecast we cannot plan with
                log.exception("building the problem failed", extra={"building": building_id})
                reason = f"problem could not be built: {error}"
            if problem is not None and self.optimizer is not None:
                outcome = await self.optimizer.solve(problem)
                reason = outcome.failure or ""
            schedule = outcome.schedule if outcome is not None else None
            state.proposals = _proposals(controller, now_s, problem, schedule)
            decision = controller.decide(now_s, overrides, problem, schedule, reason)
            state.override_ids = {c.zone_id: c.override_id for c in decision.envelope.commands}
            plan_id = state.plan_id = messages.uuid7()
            step_s = controller.plant.control_interval_s
            commands = messages.commands_of(decision, plan_id, now_s + step_s)
            issued = await self.hub.issue_commands(building_id, commands)
            published = self.wall_now()
            plan = messages.plan_of(
                building_id, plan_id, decision, step_s, published, problem, outcome
            )
            await self.publish(plan)
            self.intervals += 1
            metrics.record_interval(building_id, controller, decision.fallback)
            if decision.fallback_reason is not None:
                self.fallbacks += 1
                self.last_fallback_reason = decision.fallback_reason
                log.warning(
                    "fallback thermostat in control",
                    extra={"building": building_id, "reason": decision.fallback_reason},
                )
            attributes = messages.interval_attributes(plan, decision, outcome, len(issued.issued))
            await self._audit(
                messages.ACTION_FELL_BACK if decision.fallback else messages.ACTION_APPLIED,
                building_id,
                plan,
                attributes,
                published,
                failed=decision.fallback,
            )
            return decision

    async def on_overrides_changed(self, building_id: str) -> None:
        """Re-apply the envelope with the overrides in force now and issue the changed zones'
        commands at once (a building not controlled yet gets a whole interval now)."""
        try:
            state = self.buildings.get(building_id)
            now_s = self.clock.now_s()
            if state is None or state.proposals is None:
                if state is not None or await self._owns(
                    await self.store.get_building(building_id)
                ):
                    await self.interval(building_id, now_s)
                    state = self.buildings[building_id]
                    step_s = state.controller.plant.control_interval_s
                    state.next_tick_s = max(state.next_tick_s, now_s + step_s)
                return
            async with state.lock:
                await self._reapply(building_id, state, now_s)
        except Exception:  # the override is stored; the next interval applies it anyway
            log.exception("override not applied at once", extra={"building": building_id})

    async def _reapply(self, building_id: str, state: _Building, now_s: float) -> None:
        controller, proposals = state.controller, state.proposals
        assert proposals is not None
        overrides = await self._overrides(building_id, now_s)
        before = {
            z: (s.stage, s.heating_setpoint_c, s.cooling_setpoint_c)
            for z, s in controller.states.items()
        }
        zones = [
            ZoneInput(
                zone, controller.states[zone.zone_id], controller.temperature_c(zone.zone_id), p
            )
            for zone, p in zip(controller.plant.zones, proposals, strict=True)
        ]
        result = apply_envelope(zones, overrides, now_s, controller.plant.peak_power_cap_kw)
        controller.states = {z.plant.zone_id: s for z, s in zip(zones, result.states, strict=True)}
        changed = [
            c.zone_id
            for c in result.commands
            if before[c.zone_id] != (c.stage, c.heating_setpoint_c, c.cooling_setpoint_c)
            or c.override_id is not None
            or state.override_ids.get(c.zone_id) is not None
        ]
        state.override_ids = {c.zone_id: c.override_id for c in result.commands}
        decision = Decision(now_s, result, None)
        until_s = max(state.next_tick_s, now_s + 60.0)
        commands = messages.commands_of(decision, state.plan_id, until_s, changed)
        issued = await self.hub.issue_commands(building_id, commands)
        attributes = {
            "zones": ",".join(changed)[:1024],
            "overrides": ",".join(sorted({o.override_id for o in overrides}))[:1024],
            "commands_issued": str(len(issued.issued)),
        }
        await self._audit(messages.ACTION_OVERRIDE, building_id, None, attributes, self.wall_now())

    # ------------------------------------------------------------------ parts

    async def _load(self, building_id: str, now_s: float, first_tick_s: float) -> _Building:
        """The building's state, rebuilt (with its telemetry history replayed) when the building
        or its zones changed since it was built."""
        building = await self.store.get_building(building_id)
        zones, _ = await self.store.list_zones(building_id)
        key = (building.etag, *(f"{z.zone_id}:{z.etag}" for z in zones))
        state = self.buildings.get(building_id)
        if state is not None and state.plant_key == key:
            return state
        plant = BuildingPlant.from_proto(building, zones)
        if self.settings.control_interval_s is not None:
            plant = dataclasses.replace(plant, control_interval_s=self.settings.control_interval_s)
        previous = state.controller.states if state is not None else None
        controller = BuildingController(plant, self.settings.horizon_steps, states=previous)
        fresh = _Building(
            controller,
            key,
            state.next_tick_s if state is not None else first_tick_s,
            datetime.fromtimestamp(now_s, UTC) - HISTORY,
        )
        self.buildings[building_id] = fresh
        return fresh

    async def _learn(self, building_id: str, state: _Building, now_s: float) -> None:
        end = datetime.fromtimestamp(now_s, UTC) + timedelta(microseconds=1)
        samples = await self.store.telemetry_between(building_id, state.telemetry_after, end)
        for _, sample in samples:
            state.controller.ingest(messages.telemetry_sample(sample))
        if samples:
            newest = samples[-1][1].sample_time.ToDatetime(UTC)
            state.telemetry_after = newest + timedelta(microseconds=1)

    async def _overrides(self, building_id: str, now_s: float) -> list[Override]:
        """Active overrides, moved onto the loop's clock (they carry wall-clock times)."""
        wall = self.wall_now()
        active, _ = await self.store.list_overrides(
            building_id, "", resources_pb2.OVERRIDE_STATE_ACTIVE, None, wall
        )
        shift_s = now_s - wall.timestamp()
        found = []
        for given in active:
            override = Override.from_proto(given)
            found.append(
                Override(
                    override.override_id,
                    override.kind,
                    override.create_s + shift_s,
                    override.expire_s + shift_s,
                    override.zone_id,
                    override.heating_setpoint_c,
                    override.cooling_setpoint_c,
                    override.held_stage,
                )
            )
        return found

    async def _audit(
        self,
        action: str,
        building_id: str,
        plan: resources_pb2.Plan | None,
        attributes: dict[str, str],
        occurred: datetime,
        failed: bool = False,
    ) -> None:
        if self.audit is None:
            return
        event = messages.audit_event(
            self.settings.actor, action, building_id, plan, attributes, occurred, failed
        )
        try:
            await self.audit.put_async(event)
        except Exception:  # a full disk must not stop control; the log still has the decision
            self.audit_failures += 1
            log.exception("decision not spooled for audit", extra={"building": building_id})


def _proposals(
    controller: BuildingController,
    now_s: float,
    problem: schedule_problem_pb2.ScheduleProblem | None,
    schedule: schedule_problem_pb2.Schedule | None,
) -> list[Proposal]:
    """What `decide` is about to propose, before overrides (the same rule: the plan's first
    step when it fits, else the thermostat), kept so overrides can be re-applied on top."""
    if problem is not None and schedule is not None:
        with contextlib.suppress(ScheduleMismatch):
            return proposals_from_schedule(controller.plant, problem, schedule)
    return controller.fallback_proposals(now_s)


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancel the loop's task and wait for it."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


__all__: Sequence[str] = ("AuditSink", "ControlLoop", "LoopSettings", "stop")
