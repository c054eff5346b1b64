"""`WatchPlans`: a building's plans and acknowledged commands, replayed then followed live.

Plans are read in publication order by ``(create_time, plan_id)``. Acknowledgements carry the
acknowledging instance's clock and may commit out of order, so each read looks a little behind the
newest one sent and skips those already sent: each goes out once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

from hvac.control.v1 import control_service_pb2 as ctl
from hvac.control.v1 import resources_pb2

from svc_control.registry import ControlError, ErrorKind
from svc_control.sessions import SessionHub

_BATCH = 256

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Acknowledgements carry the acknowledging instance's clock and commit in any order; reading
# back this far behind the newest one seen catches those that committed late.
_ACK_LOOKBACK = timedelta(seconds=5)


class _AckCursor:
    """Which acknowledged commands a watcher has sent, so each goes out once."""

    def __init__(self, since: datetime) -> None:
        self.since = since
        self.sent: dict[tuple[str, int], datetime] = {}

    def query_from(self) -> datetime:
        return self.since - _ACK_LOOKBACK if self.sent else self.since

    def fresh(
        self, applied: Sequence[resources_pb2.AppliedCommand]
    ) -> list[resources_pb2.AppliedCommand]:
        new = []
        for item in applied:
            key = (item.device_id, item.command.sequence)
            if key not in self.sent:
                when = item.acknowledge_time.ToDatetime(UTC)
                self.sent[key] = when
                self.since = max(self.since, when)
                new.append(item)
        horizon = self.since - 2 * _ACK_LOOKBACK
        self.sent = {k: t for k, t in self.sent.items() if t >= horizon}
        return new


def _only_zones(plan: resources_pb2.Plan, zone_ids: frozenset[str]) -> resources_pb2.Plan:
    if not zone_ids:
        return plan
    narrowed = resources_pb2.Plan()
    narrowed.CopyFrom(plan)
    del narrowed.zones[:]
    narrowed.zones.extend(z for z in plan.zones if z.zone_id in zone_ids)
    return narrowed


async def watch_plans(
    hub: SessionHub, building_id: str, start_time: datetime | None, zone_ids: frozenset[str]
) -> AsyncIterator[ctl.WatchPlansResponse]:
    """The `WatchPlans` stream: the latest plan (or, from ``start_time``, every plan and
    acknowledged command since then, in time order), then each new one as it happens, until
    the building is deleted (NOT_FOUND). ``zone_ids`` (empty: all) narrows both."""
    zones, _ = await hub.store.list_zones(building_id)  # NOT_FOUND without the building
    unknown = sorted(zone_ids - {z.zone_id for z in zones})
    if unknown:
        raise ControlError(ErrorKind.NOT_FOUND, f"zone {unknown[0]} does not exist")
    with hub.plan_events(building_id) as wake:
        now = hub.now()
        if start_time is None:
            latest = await hub.store.latest_plan(building_id)
            plan_after = (_EPOCH, "")
            if latest is not None:
                plan_after = (latest.create_time.ToDatetime(UTC), latest.plan_id)
                yield ctl.WatchPlansResponse(plan=_only_zones(latest, zone_ids))
            acks = _AckCursor(now)
        else:
            plan_after, acks = (start_time, ""), _AckCursor(start_time)
        interval_s = hub.settings.heartbeat_interval.total_seconds()
        while True:
            wake.clear()
            plans = await hub.store.plans_after(building_id, plan_after, _BATCH)
            fetched = await hub.store.applied_since(building_id, acks.query_from(), _BATCH)
            applied = acks.fresh(fetched)
            events = [(p.create_time.ToDatetime(UTC), p, None) for p in plans] + [
                (a.acknowledge_time.ToDatetime(UTC), None, a)
                for a in applied
                if not zone_ids or a.command.zone_id in zone_ids
            ]
            for _, plan, command in sorted(events, key=lambda e: e[0]):
                if plan is not None:
                    yield ctl.WatchPlansResponse(plan=_only_zones(plan, zone_ids))
                else:
                    yield ctl.WatchPlansResponse(applied_command=command)
            if plans:
                plan_after = (plans[-1].create_time.ToDatetime(UTC), plans[-1].plan_id)
            if len(plans) < _BATCH and len(fetched) < _BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval_s)
            if not await hub.store.building_exists(building_id):
                raise ControlError(ErrorKind.NOT_FOUND, f"building {building_id} was deleted")
