"""HiGHS set-up shared by the LP and MILP backends: one thread per instance, silent, stoppable.

Every `Highs()` gets the same `threads` value: changing it after HiGHS's global scheduler has
started makes later runs return without a solution.
"""

from __future__ import annotations

import threading
from typing import Any

import highspy
import numpy as np

from svc_optimizer.formulation import LinearModel

THREADS = 1


def solver(model: LinearModel, time_limit_s: float, stop: threading.Event) -> highspy.Highs:
    """A silent single-thread HiGHS holding `model`, interrupted once `stop` is set."""
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", THREADS)
    h.setOptionValue("time_limit", max(float(time_limit_s), 1e-3))
    lp = highspy.HighsLp()
    lp.num_col_ = len(model.cost)
    lp.num_row_ = len(model.row_lower)
    lp.col_cost_ = model.cost
    lp.col_lower_ = model.col_lower
    lp.col_upper_ = model.col_upper
    lp.row_lower_ = model.row_lower
    lp.row_upper_ = model.row_upper
    lp.offset_ = model.offset
    matrix = model.matrix
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = matrix.indptr.astype(np.int32)
    lp.a_matrix_.index_ = matrix.indices.astype(np.int32)
    lp.a_matrix_.value_ = matrix.data
    if model.integrality.any():
        lp.integrality_ = [
            highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
            for i in model.integrality
        ]
    h.passModel(lp)

    def interrupt(event: Any) -> None:
        if stop.is_set():
            event.interrupt()

    for callback in (h.cbSimplexInterrupt, h.cbIpmInterrupt, h.cbMipInterrupt):
        callback.subscribe(interrupt)
    return h
