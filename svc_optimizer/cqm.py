"""The constrained quadratic model for Leap's hybrid solver: the MILP of `formulation`, as is.

Built from the same sparse matrices, so it is faithful to the MILP by construction: integer or
binary level variables, real temperatures and slacks, one constraint per row (one-hot level
choices as discrete constraints).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dimod
import numpy as np

from svc_optimizer.formulation import LinearModel, build
from svc_optimizer.problem import IntArray, Problem


def build_cqm(problem: Problem) -> tuple[dimod.ConstrainedQuadraticModel, LinearModel]:
    """The CQM of the MILP, variables labelled by the MILP's column index."""
    model = build(problem, integer=True)
    cqm = dimod.ConstrainedQuadraticModel()  # type: ignore[no-untyped-call]
    binary = (model.integrality == 1) & (model.col_lower == 0) & (model.col_upper == 1)
    for j in range(len(model.cost)):
        if binary[j]:
            cqm.add_variable("BINARY", j)
        elif model.integrality[j]:
            cqm.add_variable(
                "INTEGER", j, lower_bound=model.col_lower[j], upper_bound=model.col_upper[j]
            )
        else:
            low = model.col_lower[j] if np.isfinite(model.col_lower[j]) else -1e30
            high = model.col_upper[j] if np.isfinite(model.col_upper[j]) else 1e30
            cqm.add_variable("REAL", j, lower_bound=low, upper_bound=high)
    cqm.objective.add_linear_from((j, float(c)) for j, c in enumerate(model.cost) if c)
    cqm.objective.offset = model.offset
    # One binary per level (unequally spaced zones): discrete constraints, which Leap's solver
    # handles natively. Overlap checking is quadratic in their number, and they cannot overlap.
    groups = [cols for cols in model.level_columns if cols.ndim == 2]
    one_hot = set()
    for cols in groups:
        for k, group in enumerate(cols.tolist()):
            cqm.add_discrete(group, label=f"level-{group[0]}-{k}", check_overlaps=False)
            one_hot.add(tuple(group))
    rows = model.matrix.tocsr()
    for r in range(rows.shape[0]):
        start, end = rows.indptr[r], rows.indptr[r + 1]
        columns = rows.indices[start:end].tolist()
        terms = list(zip(columns, rows.data[start:end].tolist(), strict=True))
        low, high = model.row_lower[r], model.row_upper[r]
        if low == high == 1.0 and tuple(sorted(columns)) in one_hot:
            continue  # already a discrete constraint
        if low == high:
            cqm.add_constraint_from_iterable(terms, "==", float(low), label=f"r{r}")
            continue
        if np.isfinite(low):
            cqm.add_constraint_from_iterable(terms, ">=", float(low), label=f"r{r}l")
        if np.isfinite(high):
            cqm.add_constraint_from_iterable(terms, "<=", float(high), label=f"r{r}u")
    return cqm, model


def decode_cqm(model: LinearModel, sample: Mapping[Any, float]) -> IntArray:
    """Level indices from a CQM sample labelled by column index."""
    values = np.array([sample[j] for j in range(len(model.cost))], dtype=np.float64)
    return model.decode(values)
