"""The rule-based thermostat: control's fallback when the optimizer fails, and the baseline.

A staged proportional thermostat with hysteresis. It aims a little inside the band (heating
towards `heating_setpoint + target_offset`, cooling towards `cooling_setpoint - target_offset`),
adds one stage per `kelvin_per_stage` of error, and keeps the lowest stage running until the
zone is `hysteresis_k` past the target, so it does not chatter around the setpoint. It decides
only a stage: the safety envelope then applies the equipment limits. Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from svc_control.plant import Band, EquipmentKind, EquipmentLimits


@dataclass(frozen=True)
class ThermostatSettings:
    """How eagerly the thermostat acts."""

    target_offset_k: float = 0.5
    kelvin_per_stage: float = 0.5
    hysteresis_k: float = 0.3


DEFAULT_SETTINGS = ThermostatSettings()


def thermostat_stage(
    temperature_c: float | None,
    band: Band,
    equipment: EquipmentLimits,
    previous_stage: int = 0,
    settings: ThermostatSettings = DEFAULT_SETTINGS,
) -> int:
    """The stage to run so the zone stays within `band` (lower = heating, upper = cooling).

    Returns 0 when the temperature is unknown or not finite: with no measurement, the least
    energy is the safe choice, and the device's own setpoint control still protects the zone.
    For reversible equipment the stage means heating below the band's middle and cooling above.
    """
    if temperature_c is None or not math.isfinite(temperature_c):
        return 0
    kind, top = equipment.kind, equipment.top_stage
    middle_c = (band.lower_c + band.upper_c) / 2.0
    heats = kind is EquipmentKind.HEATING or (
        kind is EquipmentKind.REVERSIBLE and temperature_c < middle_c
    )
    if heats:
        error_k = band.lower_c + settings.target_offset_k - temperature_c
    else:
        error_k = temperature_c - (band.upper_c - settings.target_offset_k)
    if error_k > 0:
        # min() before ceil(): an absurd reading must not overflow, only ask for the top stage.
        return max(1, math.ceil(min(error_k / settings.kelvin_per_stage, top)))
    if previous_stage > 0 and error_k > -settings.hysteresis_k:
        return 1
    return 0
