"""The scheduling problem as numpy arrays: what every backend and the evaluator work on.

`from_proto` is the only place that reads a `ScheduleProblem` message; the rest of the optimizer
sees `Problem`. Time indexing follows the contract: step k has power P[k] and is judged on the
temperature at its end, T[k+1].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt
from hvac.optimizer.v1 import schedule_problem_pb2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

NO_LEVEL = -1
"""`initial_level` of a zone with no level before the horizon (step 0 is then free)."""


@dataclass(frozen=True, eq=False)
class Problem:
    """Z zones x T steps; arrays are indexed [zone] or [zone, step] or [step].

    `levels_kw` is padded to the largest level count with +inf; `level_count[z]` says how many
    of zone z's entries are real. Callers may rely on the arrays never being written to.
    """

    zone_ids: tuple[str, ...]
    step_hours: float
    a: FloatArray
    b_c_per_kw: FloatArray
    c: FloatArray
    initial_temperature_c: FloatArray
    outdoor_temperature_c: FloatArray
    gain_c: FloatArray
    lower_c: FloatArray
    upper_c: FloatArray
    levels_kw: FloatArray
    level_count: IntArray
    min_on_steps: IntArray
    min_off_steps: IntArray
    switching_penalty: FloatArray
    initial_level: IntArray
    initial_state_steps: IntArray
    price_per_kwh: FloatArray
    peak_power_cap_kw: FloatArray
    discomfort_weight_per_kelvin_hour: float

    def __post_init__(self) -> None:
        for value in vars(self).values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    @property
    def zones(self) -> int:
        return len(self.zone_ids)

    @property
    def steps(self) -> int:
        return int(self.price_per_kwh.shape[0])

    @cached_property
    def lowest_kw(self) -> FloatArray:
        """Each zone's lowest level, kW."""
        return self.levels_kw[:, 0].copy()

    @cached_property
    def highest_kw(self) -> FloatArray:
        """Each zone's highest level, kW."""
        return self.levels_kw[np.arange(self.zones), self.level_count - 1].copy()

    @cached_property
    def can_switch_off(self) -> BoolArray:
        """Zones whose lowest level is 0 kW: the only ones with an off state."""
        return np.asarray(self.levels_kw[:, 0] <= 0.0)

    @cached_property
    def equally_spaced(self) -> BoolArray:
        """Zones whose levels are equally spaced (to 1e-9 kW)."""
        out = np.zeros(self.zones, dtype=bool)
        for z in range(self.zones):
            diffs = np.diff(self.levels_kw[z, : self.level_count[z]])
            out[z] = bool(np.all(np.abs(diffs - diffs[0]) <= 1e-9))
        return out

    @cached_property
    def decay_powers(self) -> FloatArray:
        """a_z**n for n = 0..T, shape (Z, T+1): how a step's heat fades n steps later."""
        n = np.arange(self.steps + 1, dtype=np.float64)
        return np.asarray(np.power(self.a[:, None], n[None, :]))

    @cached_property
    def free_temperature_c(self) -> FloatArray:
        """Temperatures T[k+1] (Z, T) with every zone at 0 kW; power adds linearly on top."""
        drive = self.c[:, None] * self.outdoor_temperature_c[None, :] + self.gain_c
        out = np.empty((self.zones, self.steps))
        t = self.initial_temperature_c.copy()
        for k in range(self.steps):
            t = self.a * t + drive[:, k]
            out[:, k] = t
        return out

    def power_kw(self, levels: IntArray) -> FloatArray:
        """Power of level indices `levels` (..., Z, T)."""
        zone = np.arange(self.zones)[:, None]
        return np.asarray(self.levels_kw[zone, levels])


def _array(values: object) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


def from_proto(message: schedule_problem_pb2.ScheduleProblem) -> Problem:
    """A `Problem` from a validated `ScheduleProblem` (lengths and ranges already checked)."""
    zones = list(message.zones)
    max_levels = max(len(z.power_levels_kw) for z in zones)
    levels = np.full((len(zones), max_levels), np.inf)
    for i, zone in enumerate(zones):
        levels[i, : len(zone.power_levels_kw)] = list(zone.power_levels_kw)
    # Unset initial state means the minimum on/off time has already elapsed.
    elapsed = np.iinfo(np.int32).max
    return Problem(
        zone_ids=tuple(z.zone_id for z in zones),
        step_hours=message.step.ToTimedelta().total_seconds() / 3600.0,
        a=_array([z.a for z in zones]),
        b_c_per_kw=_array([z.b_c_per_kw for z in zones]),
        c=_array([z.c for z in zones]),
        initial_temperature_c=_array([z.initial_temperature_c for z in zones]),
        outdoor_temperature_c=_array(list(message.outdoor_temperature_c)),
        gain_c=_array([list(z.gain_c) for z in zones]),
        lower_c=_array([[band.lower_c for band in z.comfort] for z in zones]),
        upper_c=_array([[band.upper_c for band in z.comfort] for z in zones]),
        levels_kw=levels,
        level_count=np.asarray([len(z.power_levels_kw) for z in zones], dtype=np.int64),
        min_on_steps=np.asarray([z.min_on_steps for z in zones], dtype=np.int64),
        min_off_steps=np.asarray([z.min_off_steps for z in zones], dtype=np.int64),
        switching_penalty=_array([z.switching_penalty for z in zones]),
        initial_level=np.asarray(
            [
                z.initial_level_index if z.HasField("initial_level_index") else NO_LEVEL
                for z in zones
            ],
            dtype=np.int64,
        ),
        initial_state_steps=np.asarray(
            [
                z.initial_state_steps
                if z.HasField("initial_state_steps") and z.HasField("initial_level_index")
                else elapsed
                for z in zones
            ],
            dtype=np.int64,
        ),
        price_per_kwh=_array(list(message.price_per_kwh)),
        peak_power_cap_kw=_array(list(message.peak_power_cap_kw)),
        discomfort_weight_per_kelvin_hour=float(message.discomfort_weight_per_kelvin_hour),
    )
