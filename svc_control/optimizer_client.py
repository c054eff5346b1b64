"""The control loop's way to the optimizer: one `Solve` stream per interval, with a deadline.

`OptimizerClient.solve` never raises for the optimizer's sake. It reads the stream, keeps the
best schedule so far (every schedule the optimizer sends satisfies the hard constraints), and
returns a `SolveOutcome`: the final schedule; or, when the deadline hits or the stream breaks
after an improvement, the best one received; or no schedule and the reason, which becomes the
interval's fallback reason (unreachable, refused, late, infeasible, no solution).

In the mesh the address is the service's local Envoy egress, and `authority` picks the
optimizer's virtual host there (``optimizer.hvac.local``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
from google.protobuf.duration_pb2 import Duration
from hvac.optimizer.v1 import optimizer_service_pb2 as opt
from hvac.optimizer.v1 import optimizer_service_pb2_grpc as opt_grpc
from hvac.optimizer.v1 import schedule_problem_pb2

OPTIMIZER_AUTHORITY = "optimizer.hvac.local"
# Kept back from the RPC deadline so the optimizer's final update arrives before it.
_FINAL_MARGIN_S = 0.5


@dataclass(frozen=True)
class SolveOutcome:
    """What one solve gave: a schedule (or why none), and where it came from."""

    schedule: schedule_problem_pb2.Schedule | None
    failure: str | None  # None exactly when `schedule` is set
    backend: str = ""  # e.g. "relax_polish"; empty without a schedule
    objective: schedule_problem_pb2.ObjectiveBreakdown | None = None
    final: bool = False  # False when the schedule is the best before the stream ended early
    problem_sha256: str = ""
    elapsed_s: float = 0.0


def backend_name(backend: int) -> str:
    """The optimizer's name of a backend, lower case (``BACKEND_MILP`` -> ``milp``)."""
    if backend not in opt.Backend.values():
        return "unspecified"
    return opt.Backend.Name(opt.Backend.ValueType(backend)).removeprefix("BACKEND_").lower()


class OptimizerClient:
    """Solves over one channel; `deadline_s` bounds each call end to end (real seconds)."""

    def __init__(self, channel: grpc.aio.Channel, deadline_s: float) -> None:
        if not deadline_s > _FINAL_MARGIN_S:
            raise ValueError(f"deadline_s must exceed {_FINAL_MARGIN_S} s")
        self.channel = channel
        self.deadline_s = deadline_s
        self._stub = opt_grpc.OptimizerServiceStub(channel)

    @classmethod
    def open(
        cls,
        address: str,
        deadline_s: float,
        credentials: grpc.ChannelCredentials | None = None,
        authority: str | None = None,
    ) -> OptimizerClient:
        """A client on a new channel to `address` (plaintext without `credentials`)."""
        options = [("grpc.default_authority", authority)] if authority else []
        channel = (
            grpc.aio.secure_channel(address, credentials, options)
            if credentials is not None
            else grpc.aio.insecure_channel(address, options)
        )
        return cls(channel, deadline_s)

    async def close(self) -> None:
        await self.channel.close()

    async def solve(self, problem: schedule_problem_pb2.ScheduleProblem) -> SolveOutcome:
        """Solve `problem` within the deadline; see the module docstring for what comes back."""
        started = time.monotonic()
        budget = Duration()
        budget.FromNanoseconds(int((self.deadline_s - _FINAL_MARGIN_S) * 1e9))
        request = opt.SolveRequest(problem=problem, deadline=budget)
        best: opt.SolveResponse | None = None
        last: opt.SolveResponse | None = None
        try:
            async for update in self._stub.Solve(request, timeout=self.deadline_s):
                last = update
                if update.HasField("schedule"):
                    best = update
        except grpc.aio.AioRpcError as error:
            code = error.code()
            why = (
                "optimizer missed the deadline"
                if code == grpc.StatusCode.DEADLINE_EXCEEDED
                else f"optimizer unreachable or failed: {code.name}: {error.details()}"
            )
            return _outcome(best, why, started, final=False)
        if last is None:
            return SolveOutcome(None, "optimizer closed the stream without a result")
        if best is None:
            status = opt.SolveStatus.Name(last.status).removeprefix("SOLVE_STATUS_").lower()
            detail = f": {last.infeasibility.message}" if last.HasField("infeasibility") else ""
            return SolveOutcome(
                None,
                f"optimizer found no schedule ({status}{detail})",
                problem_sha256=last.problem_sha256,
                elapsed_s=time.monotonic() - started,
            )
        return _outcome(best, None, started, final=last.final)


def _outcome(
    best: opt.SolveResponse | None, failure: str | None, started: float, final: bool
) -> SolveOutcome:
    elapsed_s = time.monotonic() - started
    if best is None:
        return SolveOutcome(None, failure or "no schedule", elapsed_s=elapsed_s)
    return SolveOutcome(
        schedule=best.schedule,
        failure=None,
        backend=backend_name(best.backend),
        objective=best.objective,
        final=final,
        problem_sha256=best.problem_sha256,
        elapsed_s=elapsed_s,
    )
