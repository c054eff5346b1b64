"""The audit service as a real process: refusing to start without a database, and crashing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import grpc
import pytest
from hvac.audit.v1 import audit_service_pb2 as pb
from hvac.audit.v1 import audit_service_pb2_grpc as pb_grpc

from meshctl.processes import ServiceProcess
from svc_audit.testing import make_event


def test_without_database_url_the_service_exits_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["AUDIT_STATE_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "svc_audit", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "DATABASE_URL is not set" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def service_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "AUDIT_STATE_DIR": str(tmp_path / "state")}


async def test_a_killed_service_leaves_exactly_one_record_per_retried_event(
    service_env: dict[str, str], pg: asyncpg.Connection
) -> None:
    batches = [[make_event(b * 100 + i) for i in range(100)] for b in range(40)]
    singles = [make_event(10_000 + i) for i in range(200)]
    first_acks: dict[str, tuple[int, bytes]] = {}

    process = ServiceProcess("audit", env=service_env).start()
    try:
        async with grpc.aio.insecure_channel(process.address) as channel:
            stub = pb_grpc.AuditServiceStub(channel)

            async def send_batches() -> None:
                for batch in batches:
                    response = await stub.AppendBatch(pb.AppendBatchRequest(events=batch))
                    first_acks.update(
                        {a.event_id: (a.sequence, a.record_hash) for a in response.acks}
                    )

            async def send_singles() -> None:
                for event in singles:
                    ack = await stub.Append(pb.AppendRequest(event=event))
                    first_acks[event.event_id] = (ack.sequence, ack.record_hash)

            sending = asyncio.gather(send_batches(), send_singles())
            while len(first_acks) < 500:  # the service is busy appending
                await asyncio.sleep(0.01)
            assert process.process is not None
            process.process.kill()  # SIGKILL: no graceful shutdown, appends in flight
            with pytest.raises(grpc.aio.AioRpcError):
                await sending
    finally:
        process.stop()
    unfinished = sum(len(b) for b in batches) + len(singles) - len(first_acks)
    assert unfinished > 0, "the kill came after every append finished"

    with ServiceProcess("audit", env=service_env) as restarted:
        async with grpc.aio.insecure_channel(restarted.address) as channel:
            stub = pb_grpc.AuditServiceStub(channel)
            retry_acks: dict[str, tuple[int, bytes]] = {}
            for batch in batches:
                response = await stub.AppendBatch(pb.AppendBatchRequest(events=batch))
                retry_acks.update({a.event_id: (a.sequence, a.record_hash) for a in response.acks})
            for event in singles:
                ack = await stub.Append(pb.AppendRequest(event=event))
                retry_acks[event.event_id] = (ack.sequence, ack.record_hash)
            verified = await stub.VerifyChain(pb.VerifyChainRequest())

    assert {k: retry_acks[k] for k in first_acks} == first_acks  # same acknowledgement
    rows = await pg.fetch("SELECT event_id::text AS id, seq, record_hash FROM audit.records")
    assert len(rows) == len(retry_acks)  # exactly one record per event
    assert {r["id"]: (r["seq"], r["record_hash"]) for r in rows} == retry_acks
    assert verified.ok
