"""Retention drops whole old months after anchoring what remains; the compliance report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest
from hvac.audit.v1 import audit_service_pb2 as pb
from hvac.audit.v1 import records_pb2

from svc_audit import retention
from svc_audit.testing import ServedAudit, audit_config, make_event, served_audit


class FakeClock:
    """The service's clock, moved by the test (months pass in a moment)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def aged(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[ServedAudit, FakeClock]]:
    """Records 1-3 appended in January 2025, 4-5 in February, 6-7 in March."""
    clock = FakeClock(datetime(2025, 1, 15, tzinfo=UTC))
    config = audit_config(database_url, tmp_path, retention_days=40)
    async with served_audit(config, clock=clock) as audit:
        n = 0
        for month, count in ((1, 3), (2, 2), (3, 2)):
            clock.now = datetime(2025, month, 10, tzinfo=UTC)
            for _ in range(count):
                event = make_event(n, occurred=clock.now)
                await audit.stub.Append(pb.AppendRequest(event=event))
                n += 1
        clock.now = datetime(2025, 3, 20, tzinfo=UTC)
        yield audit, clock


async def _drop(audit: ServedAudit, clock: FakeClock) -> list[retention.Dropped]:
    cutoff = retention.cutoff_for(clock.now, audit.runtime.config.retention_days)
    return await retention.apply(audit.runtime.store, audit.runtime.checkpointer, cutoff)


async def test_only_months_wholly_older_than_the_period_are_dropped(
    aged: tuple[ServedAudit, FakeClock], pg: asyncpg.Connection
) -> None:
    audit, clock = aged
    dropped = await _drop(audit, clock)
    assert [(d.partition, d.first_retained_seq) for d in dropped] == [("records_2025_01", 4)]
    assert [r["seq"] for r in await pg.fetch("SELECT seq FROM audit.records ORDER BY seq")] == [
        4, 5, 6, 7,
    ]  # fmt: skip
    assert await _drop(audit, clock) == []  # nothing more is due


async def test_what_remains_verifies_against_the_retention_checkpoint(
    aged: tuple[ServedAudit, FakeClock],
) -> None:
    audit, clock = aged
    await _drop(audit, clock)
    anchor = await audit.stub.GetCheckpoint(pb.GetCheckpointRequest(min_tree_size=3))
    assert anchor.checkpoint.tree_size == 3
    result = await audit.stub.VerifyChain(pb.VerifyChainRequest())
    assert result.ok
    assert (result.start_sequence, result.end_sequence, result.records_checked) == (4, 7, 4)
    assert result.checkpoints_checked == 1


async def test_reading_below_the_oldest_retained_record_is_a_failed_precondition(
    aged: tuple[ServedAudit, FakeClock],
) -> None:
    audit, clock = aged
    await _drop(audit, clock)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.VerifyChain(pb.VerifyChainRequest(start_sequence=2))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in audit.stub.Query(pb.QueryRequest(start_sequence=2)):
            pass
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    records = [r async for m in audit.stub.Query(pb.QueryRequest()) for r in m.records]
    assert [r.sequence for r in records] == [4, 5, 6, 7]


async def test_appends_after_retention_continue_the_chain(
    aged: tuple[ServedAudit, FakeClock],
) -> None:
    audit, clock = aged
    await _drop(audit, clock)
    ack = await audit.stub.Append(pb.AppendRequest(event=make_event(99, occurred=clock.now)))
    assert ack.sequence == 8
    assert (await audit.stub.VerifyChain(pb.VerifyChainRequest())).ok


async def test_the_compliance_report_counts_by_action_and_actor_and_shows_the_logs_state(
    aged: tuple[ServedAudit, FakeClock],
) -> None:
    audit, clock = aged
    other = "spiffe://hvac.local/region/us-east/svc/gateway"
    denied = make_event(50, action="gateway.override.created", actor=other,
                        outcome=records_pb2.OUTCOME_DENIED, occurred=clock.now)  # fmt: skip
    await audit.stub.Append(pb.AppendRequest(event=denied))
    await audit.stub.EraseSubject(pb.EraseSubjectRequest(subject_id="user-1", reason="request 1"))
    await _drop(audit, clock)
    await audit.runtime.checkpointer.sign_head()

    request = pb.GetComplianceReportRequest()
    request.time_range.start_time.FromDatetime(datetime(2025, 2, 1, tzinfo=UTC))
    request.time_range.end_time.FromDatetime(clock.now + timedelta(days=1))
    report = await audit.stub.GetComplianceReport(request)

    assert (report.totals.total, report.totals.success, report.totals.denied) == (6, 5, 1)
    assert report.counts_by_action["control.plan.applied"].total == 4
    assert report.counts_by_action["gateway.override.created"].denied == 1
    assert report.counts_by_action["audit.subject.erased"].total == 1
    assert report.counts_by_actor[other].total == 1
    assert report.erasures_performed == 1
    status = report.checkpoint_status
    assert status.verified and status.latest_checkpoint.tree_size == 9
    assert status.records_since_checkpoint == 0
    kept = report.retention_status
    assert kept.retention_period.ToTimedelta() == timedelta(days=40)
    assert (kept.oldest_retained_sequence, kept.partitions_dropped) == (4, 1)
    assert kept.oldest_retained_time.ToDatetime(UTC) == datetime(2025, 2, 10, tzinfo=UTC)
