"""Per-zone thermal models learnt from telemetry, and how well they predict an hour ahead.

The model is the optimizer's (`hvac.optimizer.v1.ScheduleProblem`):

    T[k+1] = a·T[k] + b·P[k] + c·T_out[k] + g[k]

with the gains g[k] explained by what control can know in advance: a constant, occupancy, a
daily harmonic (sun, routines) and `slow_c`, a slow average of the zone's own past temperature
(time constant of a few hours) that stands in for the heat stored in walls and slab. It is
identified by windowed least squares over the latest `window_steps` steps, lightly
ridge-regularised towards a physical prior so that a short or unexciting history still gives a
usable model, and refitted whenever a step completes.

Gains nobody measures (sun through passing clouds) persist for hours, so the identifier also
keeps `disturbance_c`, the smoothed one-step residual, which predictions carry forward.

The 1-hour-ahead error is measured out of sample: when step k arrives, the model as it was fitted
an hour earlier, with the disturbance then estimated, predicts T[k] from T[k-H] with the inputs
that then occurred; the RMSE is over the latest `error_window_steps` such predictions. Pure: no
I/O, times are seconds.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

DAY_H = 24.0


@dataclass(frozen=True)
class StepSample:
    """One control step of one zone, as telemetry showed it."""

    temperature_c: float  # at the start of the step
    power_kw: float  # mean electrical power over the step
    outdoor_c: float  # mean outdoor temperature over the step
    occupied: float  # fraction of the step the zone was occupied, 0..1
    hour_of_day: float  # local time at the start of the step, 0..24


@dataclass(frozen=True)
class ThermalModel:
    """A zone's linear model for steps of `step_s`; g[k] from `gain_c`."""

    step_s: float
    a: float
    b_c_per_kw: float
    c: float
    gain_base_c: float = 0.0
    gain_occupied_c: float = 0.0
    gain_sin_c: float = 0.0
    gain_cos_c: float = 0.0
    slow_weight: float = 0.0

    def gain_c(self, occupied: float, hour_of_day: float, slow_c: float) -> float:
        """g[k] for a step with this occupancy, local hour and slow temperature."""
        angle = 2.0 * math.pi * hour_of_day / DAY_H
        return (
            self.gain_base_c
            + self.gain_occupied_c * occupied
            + self.gain_sin_c * math.sin(angle)
            + self.gain_cos_c * math.cos(angle)
            + self.slow_weight * slow_c
        )

    def next_c(
        self, temperature_c: float, sample: StepSample, slow_c: float, disturbance_c: float = 0.0
    ) -> float:
        """T[k+1] from T[k] = `temperature_c`, the step's inputs and an estimated disturbance."""
        return (
            disturbance_c
            + self.a * temperature_c
            + self.b_c_per_kw * sample.power_kw
            + self.c * sample.outdoor_c
            + self.gain_c(sample.occupied, sample.hour_of_day, slow_c)
        )

    @classmethod
    def prior(
        cls, step_s: float, time_constant_h: float = 20.0, b_c_per_kw: float = 0.1
    ) -> ThermalModel:
        """A plausible model before any data: one time constant, outdoor weight c = 1 - a."""
        a = math.exp(-step_s / 3600.0 / time_constant_h)
        return cls(step_s=step_s, a=a, b_c_per_kw=b_c_per_kw, c=1.0 - a)


def _regressors(sample: StepSample, slow_c: float) -> list[float]:
    angle = 2.0 * math.pi * sample.hour_of_day / DAY_H
    return [
        sample.temperature_c,
        sample.power_kw,
        sample.outdoor_c,
        1.0,
        sample.occupied,
        math.sin(angle),
        math.cos(angle),
        slow_c,
    ]


class ZoneIdentifier:
    """Learns one zone's `ThermalModel` from consecutive `StepSample`s.

    Feed every completed step with `add`; a missing step (pass None) breaks the chain so no
    regression spans a gap. `model` is the latest fit; `prediction_rmse_k` the tracked error.
    """

    def __init__(
        self,
        step_s: float,
        prior: ThermalModel | None = None,
        window_steps: int = 4 * 96,
        error_window_steps: int = 96,
        ridge: float = 1e-6,
        slow_time_constant_h: float = 7.0,
        disturbance_gain: float = 0.5,
    ) -> None:
        self.step_s = step_s
        self.horizon_steps = max(1, round(3600.0 / step_s))
        self._prior = prior or ThermalModel.prior(step_s)
        self._model = self._prior
        self._rows: deque[tuple[list[float], float]] = deque(maxlen=window_steps)
        self._ridge = ridge
        self._slow_alpha = 1.0 - math.exp(-step_s / 3600.0 / slow_time_constant_h)
        self._slow_c: float | None = None
        self._previous: tuple[StepSample, float] | None = None
        # For out-of-sample errors: the recent steps, and the model fitted at each of them.
        self._history: deque[tuple[StepSample, float, float, ThermalModel]] = deque(
            maxlen=self.horizon_steps + 1
        )
        self._errors: deque[float] = deque(maxlen=error_window_steps)
        self._disturbance_c = 0.0
        self._disturbance_gain = disturbance_gain

    @property
    def model(self) -> ThermalModel:
        """The latest identified model (the prior until data arrives)."""
        return self._model

    @property
    def slow_temperature_c(self) -> float | None:
        """The slow average of the zone's temperature (None before any data)."""
        return self._slow_c

    @property
    def disturbance_c(self) -> float:
        """Smoothed one-step residual, K per step: unmeasured gains to carry into forecasts."""
        return self._disturbance_c

    @property
    def samples(self) -> int:
        """Regression rows in the current window."""
        return len(self._rows)

    def prediction_rmse_k(self) -> float | None:
        """RMSE of the recent 1-hour-ahead predictions, K; None until there is one."""
        if not self._errors:
            return None
        return math.sqrt(sum(e * e for e in self._errors) / len(self._errors))

    def add(self, sample: StepSample | None) -> None:
        """Take the next completed step (None: a step is missing) and refit."""
        if sample is None or not all(
            math.isfinite(v) for v in (sample.temperature_c, sample.power_kw, sample.outdoor_c)
        ):
            self._previous = None
            self._history.clear()
            return
        slow_c = (
            sample.temperature_c
            if self._slow_c is None
            else self._slow_c + self._slow_alpha * (sample.temperature_c - self._slow_c)
        )
        self._track_error(sample)
        if self._previous is not None:
            previous, previous_slow = self._previous
            # The one-step residual of the current model: unmeasured gains (sun through clouds)
            # persist for hours, so their smoothed value is carried forward in predictions.
            residual = sample.temperature_c - self._model.next_c(
                previous.temperature_c, previous, previous_slow
            )
            self._disturbance_c += self._disturbance_gain * (residual - self._disturbance_c)
            self._rows.append((_regressors(previous, previous_slow), sample.temperature_c))
            self._model = self._fit()
        self._previous = (sample, slow_c)
        self._slow_c = slow_c
        self._history.append((sample, slow_c, self._disturbance_c, self._model))

    def _track_error(self, sample: StepSample) -> None:
        if len(self._history) < self.horizon_steps:
            return
        start = len(self._history) - self.horizon_steps
        first, slow_c, disturbance_c, model = self._history[start]
        predicted = first.temperature_c
        for k in range(start, len(self._history)):
            step = self._history[k][0]
            predicted = model.next_c(predicted, step, slow_c, disturbance_c)
        self._errors.append(sample.temperature_c - predicted)

    def _fit(self) -> ThermalModel:
        x = np.array([row for row, _ in self._rows])
        y = np.array([target for _, target in self._rows])
        prior = self._prior
        theta0 = np.array(
            [
                prior.a,
                prior.b_c_per_kw,
                prior.c,
                prior.gain_base_c,
                prior.gain_occupied_c,
                prior.gain_sin_c,
                prior.gain_cos_c,
                prior.slow_weight,
            ]
        )
        # Ridge towards the prior, scaled by the data so it only matters where data is silent.
        scale = max(1.0, float(np.mean(x * x)))
        weight = math.sqrt(self._ridge * scale * max(1, len(y)))
        lhs = np.vstack([x, weight * np.eye(x.shape[1])])
        rhs = np.concatenate([y, weight * theta0])
        theta, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
        return ThermalModel(self.step_s, *(float(v) for v in theta))
