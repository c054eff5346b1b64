"""Checkpoints are signed every N records or T seconds, stored, copied to disk and served."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import grpc
import pytest
from hvac.audit.v1 import audit_service_pb2 as pb

from svc_audit import checkpoint
from svc_audit.testing import ServedAudit, audit_config, make_event, served_audit


async def _wait_for_checkpoint(audit: ServedAudit, min_tree_size: int) -> pb.GetCheckpointResponse:
    for _ in range(200):
        try:
            response: pb.GetCheckpointResponse = await audit.stub.GetCheckpoint(
                pb.GetCheckpointRequest(min_tree_size=min_tree_size)
            )
            return response
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
            await asyncio.sleep(0.05)
    raise AssertionError("no checkpoint was signed")


async def test_get_checkpoint_is_not_found_before_the_first_signature(audit: ServedAudit) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.GetCheckpoint(pb.GetCheckpointRequest())
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_checkpoint_is_signed_after_every_n_records(
    database_url: str, tmp_path: Path
) -> None:
    config = audit_config(database_url, tmp_path, checkpoint_every_records=10)
    async with served_audit(config) as audit:
        batch = [make_event(n) for n in range(12)]
        acks = (await audit.stub.AppendBatch(pb.AppendBatchRequest(events=batch))).acks
        cp = (await _wait_for_checkpoint(audit, 10)).checkpoint
        assert cp.tree_size == 12
        assert cp.head_hash == acks[-1].record_hash


async def test_a_checkpoint_is_signed_after_t_seconds_with_few_records(
    database_url: str, tmp_path: Path
) -> None:
    config = audit_config(database_url, tmp_path, checkpoint_interval_s=0.2)
    async with served_audit(config) as audit:
        ack = await audit.stub.Append(pb.AppendRequest(event=make_event(1)))
        cp = (await _wait_for_checkpoint(audit, 1)).checkpoint
        assert (cp.tree_size, cp.head_hash) == (1, ack.record_hash)


async def test_the_served_checkpoint_verifies_with_the_configured_key_and_matches_its_file(
    audit: ServedAudit,
) -> None:
    await audit.stub.AppendBatch(pb.AppendBatchRequest(events=[make_event(n) for n in range(3)]))
    await audit.runtime.checkpointer.sign_head()
    cp = (await audit.stub.GetCheckpoint(pb.GetCheckpointRequest())).checkpoint
    public_key = next(iter(audit.runtime.trusted.values()))
    public_key.verify(cp.signature, cp.note)
    origin, size, head, _when, _ = cp.note.decode().split("\n")
    assert (origin, int(size), base64.b64decode(head)) == (cp.origin, 3, cp.head_hash)
    on_disk = checkpoint.from_signed_note(audit.runtime.files.path(3).read_bytes())
    assert (on_disk.note, on_disk.signature) == (cp.note, cp.signature)


async def test_get_checkpoint_returns_the_earliest_covering_a_size(audit: ServedAudit) -> None:
    for n in range(3):
        await audit.stub.Append(pb.AppendRequest(event=make_event(n)))
        await audit.runtime.checkpointer.sign_head()
    assert (await audit.stub.GetCheckpoint(pb.GetCheckpointRequest())).checkpoint.tree_size == 3
    covering = await audit.stub.GetCheckpoint(pb.GetCheckpointRequest(min_tree_size=2))
    assert covering.checkpoint.tree_size == 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.GetCheckpoint(pb.GetCheckpointRequest(min_tree_size=4))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_verify_chain_refuses_a_range_past_the_end(audit: ServedAudit) -> None:
    await audit.stub.Append(pb.AppendRequest(event=make_event(1)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.VerifyChain(pb.VerifyChainRequest(end_sequence=2))
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_verify_chain_of_an_empty_log_is_ok(audit: ServedAudit) -> None:
    result = await audit.stub.VerifyChain(pb.VerifyChainRequest())
    assert result.ok and result.records_checked == 0


async def test_a_clean_shutdown_signs_a_checkpoint_of_the_head(
    database_url: str, tmp_path: Path
) -> None:
    config = audit_config(database_url, tmp_path)
    async with served_audit(config) as audit:
        ack = await audit.stub.Append(pb.AppendRequest(event=make_event(1)))
    async with served_audit(config) as restarted:
        cp = (await restarted.stub.GetCheckpoint(pb.GetCheckpointRequest())).checkpoint
        assert (cp.tree_size, cp.head_hash) == (1, ack.record_hash)
