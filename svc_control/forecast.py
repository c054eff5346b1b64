"""Forecasts over a planning horizon: outdoor temperature, gains, occupancy and prices.

- Outdoor temperature: the building's own history. The forecast follows the mean daily profile
  of the past days (at step resolution), shifted by today's deviation from it, which fades with
  `bias_decay_h`. With no history for a time of day, the latest value persists.
- Occupancy: the zone's schedule (weekly windows in local time).
- Gains: the identified model's gain terms evaluated with that occupancy and time of day.
- Prices: the tariff's time-weighted mean price over each step.

Pure: no I/O. Times are seconds since the epoch; local time comes from the building's zone.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from svc_control.identify import ThermalModel
from svc_control.plant import ZonePlant
from svc_control.schedules import Tariff

DAY_S = 86400.0


def local_time(time_s: float, time_zone: ZoneInfo) -> datetime:
    """The wall-clock time at `time_s` in `time_zone`."""
    return datetime.fromtimestamp(time_s, UTC).astimezone(time_zone)


def local_hour(time_s: float, time_zone: ZoneInfo) -> float:
    """Hour of day (0..24, fractional) at `time_s` in `time_zone`."""
    local = local_time(time_s, time_zone)
    return local.hour + local.minute / 60.0 + local.second / 3600.0


@dataclass(frozen=True)
class StepTimes:
    """The steps of a horizon: start times, and their local hours."""

    start_s: tuple[float, ...]
    hour_of_day: tuple[float, ...]

    @classmethod
    def of(cls, start_s: float, steps: int, step_s: float, time_zone: ZoneInfo) -> StepTimes:
        """`steps` consecutive steps of `step_s` from `start_s`."""
        starts = tuple(start_s + k * step_s for k in range(steps))
        return cls(starts, tuple(local_hour(t, time_zone) for t in starts))


class OutdoorForecaster:
    """Learns the outdoor temperature's daily profile from per-step observations."""

    def __init__(self, step_s: float, history_days: int = 7, bias_decay_h: float = 6.0) -> None:
        self.step_s = step_s
        self._slots = max(1, round(DAY_S / step_s))
        self._history: deque[tuple[float, float]] = deque(maxlen=history_days * self._slots)
        self._bias_decay_h = bias_decay_h

    def observe(self, time_s: float, outdoor_c: float) -> None:
        """Record the outdoor temperature of the step starting at `time_s`."""
        if math.isfinite(outdoor_c):
            self._history.append((time_s, outdoor_c))

    def _slot(self, time_s: float) -> int:
        return math.floor(time_s / self.step_s) % self._slots

    def forecast(self, times: StepTimes) -> list[float]:
        """Outdoor temperature for each step of `times` (0 °C if nothing was ever observed)."""
        if not self._history:
            return [0.0] * len(times.start_s)
        sums: dict[int, list[float]] = {}
        for time_s, value in self._history:
            sums.setdefault(self._slot(time_s), []).append(value)
        profile = {slot: sum(v) / len(v) for slot, v in sums.items()}
        now_s, latest_c = self._history[-1]
        bias_c = latest_c - profile[self._slot(now_s)]
        result = []
        for start_s in times.start_s:
            typical = profile.get(self._slot(start_s))
            if typical is None:
                result.append(latest_c)
                continue
            fade = math.exp(-max(0.0, start_s - now_s) / 3600.0 / self._bias_decay_h)
            result.append(typical + bias_c * fade)
        return result


def occupancy_forecast(zone: ZonePlant, times: StepTimes, time_zone: ZoneInfo) -> list[float]:
    """1.0 for steps whose start the zone's schedule covers, else 0.0."""
    return [
        1.0 if zone.scheduled_occupied(local_time(t, time_zone)) else 0.0 for t in times.start_s
    ]


def gain_forecast(
    model: ThermalModel, occupancy: list[float], times: StepTimes, slow_c: float
) -> list[float]:
    """g[k] per step from the identified gain terms (the slow temperature held constant)."""
    return [
        model.gain_c(occupied, hour, slow_c)
        for occupied, hour in zip(occupancy, times.hour_of_day, strict=True)
    ]


def price_forecast(
    tariff: Tariff, times: StepTimes, step_s: float, time_zone: ZoneInfo
) -> list[float]:
    """The tariff's mean price per kWh over each step."""
    return [
        tariff.mean_price(datetime.fromtimestamp(t, UTC), step_s, time_zone) for t in times.start_s
    ]
