"""Weather profiles for the simulator: outdoor temperature and solar irradiance over time.

Profiles are deterministic functions of time (seeded), so a run can be repeated exactly and a
controller never sees more than the simulator chooses to report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np


class Weather(Protocol):
    """What the building model needs from the weather at a moment."""

    def outdoor_temperature_c(self, when: datetime) -> float:
        """Outdoor air temperature, °C."""
        ...

    def solar_irradiance_w_per_m2(self, when: datetime) -> float:
        """Solar irradiance on the building's windows, W/m² (0 at night)."""
        ...


@dataclass(frozen=True)
class ConstantWeather:
    """The same temperature and irradiance at every moment (for physics checks)."""

    temperature_c: float
    irradiance_w_per_m2: float = 0.0

    def outdoor_temperature_c(self, when: datetime) -> float:
        """See `Weather`."""
        return self.temperature_c

    def solar_irradiance_w_per_m2(self, when: datetime) -> float:
        """See `Weather`."""
        return self.irradiance_w_per_m2


@dataclass(frozen=True)
class SyntheticWeather:
    """A daily cycle with seeded day-to-day variation, in the building's local time.

    The temperature follows a sine with its minimum 12 hours before `warmest_hour`, shifted by a
    per-day offset (normal, `day_to_day_sd_c`) that is interpolated linearly through each day so
    the profile is continuous. Irradiance is a half sine between sunrise and sunset scaled by a
    per-day clearness in [`min_clearness`, 1].
    """

    time_zone: str
    mean_c: float = 5.0
    daily_amplitude_c: float = 4.0
    warmest_hour: float = 15.0
    day_to_day_sd_c: float = 2.0
    sunrise_hour: float = 7.5
    sunset_hour: float = 17.0
    peak_irradiance_w_per_m2: float = 450.0
    min_clearness: float = 0.3
    seed: int = 0

    def _day(self, day_ordinal: int) -> tuple[float, float]:
        rng = np.random.default_rng([self.seed, day_ordinal])
        offset_c = float(rng.normal(0.0, self.day_to_day_sd_c))
        clearness = float(rng.uniform(self.min_clearness, 1.0))
        return offset_c, clearness

    def _local(self, when: datetime) -> tuple[datetime, float]:
        local = when.astimezone(ZoneInfo(self.time_zone))
        hour = local.hour + local.minute / 60.0 + (local.second + local.microsecond / 1e6) / 3600
        return local, hour

    def outdoor_temperature_c(self, when: datetime) -> float:
        """See `Weather`."""
        local, hour = self._local(when)
        today, _ = self._day(local.toordinal())
        tomorrow, _ = self._day(local.toordinal() + 1)
        offset_c = today + (tomorrow - today) * hour / 24.0
        phase = 2.0 * math.pi * (hour - self.warmest_hour) / 24.0
        return self.mean_c + offset_c + self.daily_amplitude_c * math.cos(phase)

    def solar_irradiance_w_per_m2(self, when: datetime) -> float:
        """See `Weather`."""
        local, hour = self._local(when)
        if not self.sunrise_hour < hour < self.sunset_hour:
            return 0.0
        _, clearness = self._day(local.toordinal())
        fraction = (hour - self.sunrise_hour) / (self.sunset_hour - self.sunrise_hour)
        return self.peak_irradiance_w_per_m2 * clearness * math.sin(math.pi * fraction)
