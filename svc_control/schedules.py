"""Weekly windows and time-of-use tariffs: when a zone is occupied, what energy costs.

Pure domain objects with converters from the `hvac.control.v1` messages. Windows are in the
building's local wall-clock time; callers pass aware datetimes and the building's time zone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hvac.control.v1 import resources_pb2

MINUTES_PER_DAY = 1440


@dataclass(frozen=True)
class WeeklyWindow:
    """[start_minute, end_minute) of local time on each of `weekdays` (0 = Monday … 6 = Sunday)."""

    weekdays: frozenset[int]
    start_minute: int
    end_minute: int

    def __post_init__(self) -> None:
        if not self.weekdays <= frozenset(range(7)):
            raise ValueError(f"weekdays must be 0..6, got {sorted(self.weekdays)}")
        if not 0 <= self.start_minute < self.end_minute <= MINUTES_PER_DAY:
            raise ValueError(f"bad window minutes {self.start_minute}..{self.end_minute}")

    def covers(self, local: datetime) -> bool:
        """Whether the local wall-clock time `local` lies inside the window."""
        minute = local.hour * 60 + local.minute
        return local.weekday() in self.weekdays and self.start_minute <= minute < self.end_minute

    @classmethod
    def from_proto(cls, window: resources_pb2.WeeklyWindow) -> WeeklyWindow:
        """The window of a validated `WeeklyWindow` message (google.type.DayOfWeek 1 = Monday)."""
        return cls(
            weekdays=frozenset(int(day) - 1 for day in window.days),
            start_minute=window.start_minute_of_day,
            end_minute=window.end_minute_of_day,
        )


WEEKDAYS = frozenset(range(5))


def office_hours(start_hour: float = 7.0, end_hour: float = 19.0) -> WeeklyWindow:
    """Monday to Friday from `start_hour` to `end_hour` local time."""
    return WeeklyWindow(WEEKDAYS, round(start_hour * 60), round(end_hour * 60))


def in_any(windows: Iterable[WeeklyWindow], local: datetime) -> bool:
    """Whether any of `windows` covers the local time `local`."""
    return any(window.covers(local) for window in windows)


@dataclass(frozen=True)
class TimeOfUsePeriod:
    """A price that applies inside one weekly window."""

    price_per_kwh: float
    window: WeeklyWindow
    display_name: str = ""


@dataclass(frozen=True)
class Tariff:
    """An electricity tariff: the price of the period covering a moment, else the default."""

    default_price_per_kwh: float
    periods: tuple[TimeOfUsePeriod, ...] = ()
    currency_code: str = "USD"

    def price_at(self, local: datetime) -> float:
        """Price per kWh at local wall-clock time `local`."""
        for period in self.periods:
            if period.window.covers(local):
                return period.price_per_kwh
        return self.default_price_per_kwh

    def mean_price(self, start: datetime, duration_s: float, time_zone: ZoneInfo) -> float:
        """Time-weighted mean price per kWh over [start, start + duration_s).

        Windows are whole minutes, so the price is constant within each minute: the mean over
        minute slices is exact for steps that start on a minute.
        """
        if duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {duration_s}")
        total, elapsed_s = 0.0, 0.0
        while elapsed_s < duration_s:
            slice_s = min(60.0, duration_s - elapsed_s)
            local = (start + timedelta(seconds=elapsed_s)).astimezone(time_zone)
            total += self.price_at(local) * slice_s
            elapsed_s += slice_s
        return total / duration_s

    @classmethod
    def from_proto(cls, tariff: resources_pb2.Tariff) -> Tariff:
        """The tariff of a validated `Tariff` message."""
        return cls(
            default_price_per_kwh=tariff.default_price_per_kwh,
            periods=tuple(
                TimeOfUsePeriod(p.price_per_kwh, WeeklyWindow.from_proto(p.window), p.display_name)
                for p in tariff.periods
            ),
            currency_code=tariff.currency_code,
        )

    def to_proto(self) -> resources_pb2.Tariff:
        """The `Tariff` message a building is registered with."""
        return resources_pb2.Tariff(
            currency_code=self.currency_code,
            default_price_per_kwh=self.default_price_per_kwh,
            periods=[
                resources_pb2.TimeOfUsePeriod(
                    display_name=p.display_name,
                    price_per_kwh=p.price_per_kwh,
                    window=resources_pb2.WeeklyWindow(
                        days=sorted(d + 1 for d in p.window.weekdays),
                        start_minute_of_day=p.window.start_minute,
                        end_minute_of_day=p.window.end_minute,
                    ),
                )
                for p in self.periods
            ],
        )
