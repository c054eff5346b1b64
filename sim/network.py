"""A linear thermal RC network, discretised exactly.

Nodes are temperatures (°C) with heat capacities (kWh/K), joined by thermal resistances (K/kW);
some nodes also connect to the outdoor air. Heat flows into nodes are inputs (kW). With inputs
held constant over a step (zero-order hold), the step is solved exactly with the matrix
exponential of the augmented system, so results do not depend on the step length beyond
floating-point rounding. Time inside this module is in hours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.linalg import expm

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Discretisation:
    """x_end = phi·x + gamma·u and ∫x dt = phi_int·x + gamma_int·u over one step of `hours`."""

    hours: float
    phi: Array
    gamma: Array
    phi_int: Array
    gamma_int: Array


@dataclass(frozen=True)
class StepResult:
    """Node temperatures at the end of a step, and their mean over the step."""

    end_c: Array
    mean_c: Array


class ThermalNetwork:
    """dx/dt = A·x + B·u with u = [T_out, heat into each node (kW)].

    Callers may rely on: `step` is exact for piecewise-constant inputs; `stored_kwh` and
    `outdoor_gain_kwh` account for every kWh, so energy balances close to rounding error.
    """

    def __init__(
        self,
        capacities_kwh_per_k: list[float],
        conductances_kw_per_k: dict[tuple[int, int], float],
        outdoor_conductances_kw_per_k: list[float],
    ) -> None:
        capacity = np.asarray(capacities_kwh_per_k, dtype=np.float64)
        if capacity.ndim != 1 or not np.all(capacity > 0):
            raise ValueError("every node needs a positive heat capacity")
        n = capacity.size
        outdoor = np.asarray(outdoor_conductances_kw_per_k, dtype=np.float64)
        if outdoor.shape != (n,) or np.any(outdoor < 0):
            raise ValueError("one non-negative outdoor conductance per node")
        a = np.zeros((n, n))
        for (i, j), g in conductances_kw_per_k.items():
            if i == j or not (0 <= i < n and 0 <= j < n) or g < 0:
                raise ValueError(f"bad conductance {(i, j)}: {g}")
            a[i, i] -= g / capacity[i]
            a[i, j] += g / capacity[i]
            a[j, j] -= g / capacity[j]
            a[j, i] += g / capacity[j]
        a -= np.diag(outdoor / capacity)
        b = np.zeros((n, n + 1))
        b[:, 0] = outdoor / capacity
        b[:, 1:] = np.diag(1.0 / capacity)
        self.capacities_kwh_per_k = capacity
        self.outdoor_conductances_kw_per_k = outdoor
        self.a = a
        self.b = b
        self._cache: dict[float, Discretisation] = {}

    @property
    def size(self) -> int:
        """Number of nodes."""
        return int(self.capacities_kwh_per_k.size)

    def discretise(self, hours: float) -> Discretisation:
        """The exact step matrices for a step of `hours` (cached per step length)."""
        if not hours > 0:
            raise ValueError(f"step must be positive, got {hours} h")
        cached = self._cache.get(hours)
        if cached is not None:
            return cached
        n, m = self.size, self.size + 1
        k = n + m
        augmented = np.zeros((k, k))
        augmented[:n, :n] = self.a
        augmented[:n, n:] = self.b
        # Van Loan: exp([[M, I], [0, 0]]·h) holds ∫0^h exp(M·s) ds in its upper-right block.
        van_loan = np.zeros((2 * k, 2 * k))
        van_loan[:k, :k] = augmented
        van_loan[:k, k:] = np.eye(k)
        big = expm(van_loan * hours)
        transition = big[:k, :k]
        integral = big[:k, k:]
        result = Discretisation(
            hours=hours,
            phi=transition[:n, :n].copy(),
            gamma=transition[:n, n:].copy(),
            phi_int=integral[:n, :n].copy(),
            gamma_int=integral[:n, n:].copy(),
        )
        self._cache[hours] = result
        return result

    def step(self, x_c: Array, outdoor_c: float, heat_kw: Array, hours: float) -> StepResult:
        """Advance node temperatures `x_c` by `hours` with constant outdoor air and heat inputs."""
        d = self.discretise(hours)
        u = np.concatenate(([outdoor_c], heat_kw))
        end = d.phi @ x_c + d.gamma @ u
        mean = (d.phi_int @ x_c + d.gamma_int @ u) / hours
        return StepResult(end_c=end, mean_c=mean)

    def stored_kwh(self, x_c: Array) -> float:
        """Heat stored in the nodes relative to 0 °C, kWh."""
        return float(self.capacities_kwh_per_k @ x_c)

    def outdoor_gain_kwh(self, mean_c: Array, outdoor_c: float, hours: float) -> float:
        """Heat gained from outdoors over a step whose mean node temperatures are `mean_c`."""
        return float(self.outdoor_conductances_kw_per_k @ (outdoor_c - mean_c) * hours)
