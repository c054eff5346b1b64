"""Audit log throughput: appends per second (single and batched) and VerifyChain records/s.

Runs the real service in process over gRPC on loopback against PostgreSQL (``DATABASE_URL``,
else an embedded server). ``--verify-records`` sets the size of the log verified; when it is
below 1,000,000 the time for a million is extrapolated linearly and labelled as such.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from hvac.audit.v1 import audit_service_pb2 as pb

from bench.report import Figure, write
from meshkit.testing import postgres_server_from_env
from svc_audit.testing import ServedAudit, audit_config, make_event, served_audit

BATCH = 1000


async def _single(audit: ServedAudit, count: int, writers: int) -> float:
    async def writer() -> None:
        for _ in range(count // writers):
            await audit.stub.Append(pb.AppendRequest(event=make_event()))  # a fresh UUIDv4

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return count / (time.perf_counter() - start)


async def _batched(audit: ServedAudit, batches: int, first: int, writers: int) -> float:
    events = [[make_event(first + b * BATCH + i) for i in range(BATCH)] for b in range(batches)]
    requests = [pb.AppendBatchRequest(events=batch) for batch in events]

    async def writer(w: int) -> None:
        for request in requests[w::writers]:
            await audit.stub.AppendBatch(request)

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return batches * BATCH / (time.perf_counter() - start)


async def _run(single_count: int, batches: int, verify_records: int) -> list[Figure]:
    with postgres_server_from_env() as server, tempfile.TemporaryDirectory() as state:
        async with server.database("bench") as url:
            config = audit_config(url, Path(state))
            async with served_audit(config) as audit:
                single_1 = await _single(audit, single_count // 4, 1)
                single_32 = await _single(audit, single_count, 32)
                batched = await _batched(audit, batches, 0, 2)
                head = (await audit.runtime.store.head()).sequence
                missing = max(0, verify_records - head)
                await _batched(audit, -(-missing // BATCH), 100_000_000, 2)
                await audit.runtime.checkpointer.sign_head()
                start = time.perf_counter()
                result = await audit.stub.VerifyChain(pb.VerifyChainRequest(), timeout=600)
                verify_s = time.perf_counter() - start
                assert result.ok, result
    per_s = result.records_checked / verify_s
    million_s = 1_000_000 / per_s
    label = "VerifyChain 1M records" + (
        "" if result.records_checked >= 1_000_000 else " (extrapolated)"
    )
    return [
        Figure("Append, 1 writer", single_1, "appends/s", "(reported)"),
        Figure("Append, 32 writers", single_32, "appends/s", "(reported)"),
        Figure("AppendBatch x1000, 2 writers", batched, "appends/s", ">= 5000", batched >= 5000),
        Figure("VerifyChain", per_s, "records/s", f"over {result.records_checked} records"),
        Figure(label, million_s, "s", "< 20", million_s < 20),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__)
    parser.add_argument("--single", type=int, default=4000, help="single appends (32 writers)")
    parser.add_argument("--batches", type=int, default=30, help="batches of 1,000 events")
    parser.add_argument("--verify-records", type=int, default=1_000_000, help="log size verified")
    ns = parser.parse_args(argv)
    figures = asyncio.run(_run(ns.single, ns.batches, ns.verify_records))
    write(
        "audit",
        figures,
        {"single": ns.single, "batches": ns.batches, "batch_size": BATCH,
         "verify_records": ns.verify_records},
    )  # fmt: skip
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
