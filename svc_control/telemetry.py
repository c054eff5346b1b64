"""Telemetry as the control domain sees it, and its aggregation into control steps.

Devices report whenever they like (typically every minute); models and plans work in control
steps. `StepAggregator` turns a building's samples into one `StepSample` per zone per completed
step: the temperature at the step's start (the first reading in the step), the mean power,
outdoor temperature and occupancy over the step. A step without samples is reported as missing,
so identification never regresses across a gap. Pure: no I/O, times are seconds since the epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from svc_control.identify import StepSample


@dataclass(frozen=True)
class ZoneReading:
    """One zone in one sample (cf. `hvac.control.v1.ZoneReading`)."""

    zone_id: str
    temperature_c: float
    occupied: bool | None = None  # None: not sensed
    power_kw: float | None = None  # None: not metered
    power_stage: int | None = None


@dataclass(frozen=True)
class TelemetrySample:
    """One sample of a building (cf. `hvac.control.v1.Telemetry`)."""

    time_s: float
    readings: tuple[ZoneReading, ...]
    outdoor_temperature_c: float | None = None


@dataclass
class _Bucket:
    index: int
    first_c: dict[str, float] = field(default_factory=dict)
    power_kw: dict[str, list[float]] = field(default_factory=dict)
    occupied: dict[str, list[float]] = field(default_factory=dict)
    outdoor_c: list[float] = field(default_factory=list)


# Whether a zone is occupied at a time by schedule, for zones whose devices cannot sense it.
ScheduleLookup = Callable[[str, float], bool]
# Local hour of day (0..24) of a time.
LocalHour = Callable[[float], float]


class StepAggregator:
    """Builds per-zone `StepSample`s of `step_s` from a building's telemetry, in time order."""

    def __init__(
        self,
        step_s: float,
        zone_ids: Sequence[str],
        scheduled_occupied: ScheduleLookup,
        local_hour: LocalHour,
    ) -> None:
        self.step_s = step_s
        self._zone_ids = tuple(zone_ids)
        self._scheduled = scheduled_occupied
        self._local_hour = local_hour
        self._bucket: _Bucket | None = None
        self._last_outdoor_c: float | None = None
        self.latest: dict[str, ZoneReading] = {}

    def add(self, sample: TelemetrySample) -> list[tuple[float, dict[str, StepSample | None]]]:
        """Take a sample; returns the steps it completed as (start_s, per-zone sample or None).

        Samples older than the current step are ignored (late duplicates after a reconnect).
        """
        index = math.floor(sample.time_s / self.step_s)
        completed: list[tuple[float, dict[str, StepSample | None]]] = []
        bucket = self._bucket
        if bucket is not None and index < bucket.index:
            return completed
        if bucket is None or index > bucket.index:
            if bucket is not None:
                completed.append(self._close(bucket))
                completed.extend(
                    (i * self.step_s, dict.fromkeys(self._zone_ids))
                    for i in range(bucket.index + 1, index)
                )
            bucket = self._bucket = _Bucket(index)
        if sample.outdoor_temperature_c is not None and math.isfinite(sample.outdoor_temperature_c):
            bucket.outdoor_c.append(sample.outdoor_temperature_c)
            self._last_outdoor_c = sample.outdoor_temperature_c
        for reading in sample.readings:
            if reading.zone_id not in self._zone_ids or not math.isfinite(reading.temperature_c):
                continue
            self.latest[reading.zone_id] = reading
            bucket.first_c.setdefault(reading.zone_id, reading.temperature_c)
            if reading.power_kw is not None:
                bucket.power_kw.setdefault(reading.zone_id, []).append(reading.power_kw)
            occupied = (
                reading.occupied
                if reading.occupied is not None
                else self._scheduled(reading.zone_id, sample.time_s)
            )
            bucket.occupied.setdefault(reading.zone_id, []).append(1.0 if occupied else 0.0)
        return completed

    def _close(self, bucket: _Bucket) -> tuple[float, dict[str, StepSample | None]]:
        start_s = bucket.index * self.step_s
        last = self._last_outdoor_c
        outdoor = bucket.outdoor_c or ([] if last is None else [last])
        hour = self._local_hour(start_s)
        steps: dict[str, StepSample | None] = {}
        for zone_id in self._zone_ids:
            first = bucket.first_c.get(zone_id)
            power = bucket.power_kw.get(zone_id)
            if first is None or power is None or not outdoor:
                steps[zone_id] = None
                continue
            occupied = bucket.occupied[zone_id]
            steps[zone_id] = StepSample(
                temperature_c=first,
                power_kw=sum(power) / len(power),
                outdoor_c=sum(outdoor) / len(outdoor),
                occupied=sum(occupied) / len(occupied),
                hour_of_day=hour,
            )
        return start_s, steps
