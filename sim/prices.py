"""Price profiles for simulated buildings: time-of-use tariffs with on-, mid- and off-peak.

A tariff is published, not hidden: the same `Tariff` is registered with the control service (as
`hvac.control.v1.Tariff` via `Tariff.to_proto`) and bills the simulated run in the KPIs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from svc_control.schedules import WEEKDAYS, Tariff, TimeOfUsePeriod, WeeklyWindow


def time_of_use(
    on_peak_per_kwh: float = 0.138,
    mid_peak_per_kwh: float = 0.084,
    off_peak_per_kwh: float = 0.044,
    currency_code: str = "USD",
) -> Tariff:
    """A weekday time-of-use tariff: on-peak 14-18 h, mid-peak 8-14 h and 18-21 h, else off-peak.

    The default prices are those of a US utility's summer schedule.
    """

    def period(name: str, price: float, start_h: int, end_h: int) -> TimeOfUsePeriod:
        return TimeOfUsePeriod(price, WeeklyWindow(WEEKDAYS, start_h * 60, end_h * 60), name)

    return Tariff(
        default_price_per_kwh=off_peak_per_kwh,
        periods=(
            period("mid-peak", mid_peak_per_kwh, 8, 14),
            period("on-peak", on_peak_per_kwh, 14, 18),
            period("mid-peak", mid_peak_per_kwh, 18, 21),
        ),
        currency_code=currency_code,
    )


def price_profile(
    tariff: Tariff, start: datetime, steps: int, step_s: float, time_zone: str
) -> list[float]:
    """Mean price of each of `steps` consecutive steps from `start`."""
    zone = ZoneInfo(time_zone)
    return [
        tariff.mean_price(start + timedelta(seconds=k * step_s), step_s, zone) for k in range(steps)
    ]
