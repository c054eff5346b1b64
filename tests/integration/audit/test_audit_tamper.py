"""Tampering done as the database owner, bypassing the service, is found by VerifyChain.

Each test builds a log of 1,200 records with a signed checkpoint at 1,000, then changes the
database directly (with the append-only triggers disabled, as a superuser could) and checks that
verification fails at the right sequence number for the right reason.
"""

from __future__ import annotations

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hvac.audit.v1 import audit_service_pb2 as pb

from svc_audit import chain
from svc_audit.anchoring import to_stored
from svc_audit.checkpoint import Signer
from svc_audit.testing import ServedAudit, make_event

RECORDS = 1_200
CHECKPOINT_AT = 1_000
TAMPERED = 500


@pytest.fixture
async def log(audit: ServedAudit, pg: asyncpg.Connection) -> ServedAudit:
    """1,200 records, a checkpoint signed at 1,000, and the triggers off for the tamperer."""
    for first in range(0, CHECKPOINT_AT, 500):
        batch = [make_event(n) for n in range(first, first + 500)]
        await audit.stub.AppendBatch(pb.AppendBatchRequest(events=batch))
    await audit.runtime.checkpointer.sign_head()
    batch = [make_event(n) for n in range(CHECKPOINT_AT, RECORDS)]
    await audit.stub.AppendBatch(pb.AppendBatchRequest(events=batch))
    await pg.execute("ALTER TABLE audit.records DISABLE TRIGGER USER")
    await pg.execute("ALTER TABLE audit.checkpoints DISABLE TRIGGER USER")
    return audit


async def _verify(audit: ServedAudit, **fields: int) -> pb.VerifyChainResponse:
    response: pb.VerifyChainResponse = await audit.stub.VerifyChain(pb.VerifyChainRequest(**fields))
    return response


async def test_an_untouched_log_verifies_and_is_anchored_at_the_checkpoint(
    log: ServedAudit,
) -> None:
    result = await _verify(log)
    assert result.ok
    assert (result.start_sequence, result.end_sequence) == (1, RECORDS)
    assert result.records_checked == RECORDS
    assert (result.checkpoints_checked, result.anchored_sequence) == (1, CHECKPOINT_AT)


async def test_an_updated_payload_is_a_hash_mismatch_at_its_sequence(
    log: ServedAudit, pg: asyncpg.Connection
) -> None:
    await pg.execute(
        "UPDATE audit.records SET entry = overlay(entry PLACING '\\x5a'::bytea FROM 40 FOR 1)"
        " WHERE seq = $1",
        TAMPERED,
    )
    result = await _verify(log)
    assert not result.ok
    assert result.first_bad_sequence == TAMPERED
    assert result.failure_reason == pb.VERIFY_FAILURE_REASON_HASH_MISMATCH
    assert result.records_checked == TAMPERED


@pytest.mark.parametrize(
    "change",
    [
        "action = 'control.plan.hidden'",
        "actor = 'spiffe://hvac.local/someone/else'",
        "resource = 'buildings/other'",
        "building_id = 'other'",
        "outcome = 3",
        "occurred_time = occurred_time + interval '1 second'",
        "event_id = '0f0f0f0f-0000-4000-8000-000000000002'",
    ],
)
async def test_an_updated_filter_column_is_a_hash_mismatch_at_its_sequence(
    log: ServedAudit, pg: asyncpg.Connection, change: str
) -> None:
    await pg.execute(f"UPDATE audit.records SET {change} WHERE seq = $1", 700)
    result = await _verify(log)
    assert (result.ok, result.first_bad_sequence) == (False, 700)
    assert result.failure_reason == pb.VERIFY_FAILURE_REASON_HASH_MISMATCH


async def test_a_deleted_record_is_a_gap_at_its_sequence(
    log: ServedAudit, pg: asyncpg.Connection
) -> None:
    await pg.execute("DELETE FROM audit.records WHERE seq = $1", TAMPERED)
    result = await _verify(log)
    assert (result.ok, result.first_bad_sequence) == (False, TAMPERED)
    assert result.failure_reason == pb.VERIFY_FAILURE_REASON_GAP


async def test_two_reordered_records_are_a_link_mismatch_at_the_first(
    log: ServedAudit, pg: asyncpg.Connection
) -> None:
    async with pg.transaction():
        await pg.execute("UPDATE audit.records SET seq = -1 WHERE seq = $1", TAMPERED)
        await pg.execute("UPDATE audit.records SET seq = $1 WHERE seq = $2", TAMPERED, TAMPERED + 1)
        await pg.execute("UPDATE audit.records SET seq = $1 WHERE seq = -1", TAMPERED + 1)
    result = await _verify(log)
    assert (result.ok, result.first_bad_sequence) == (False, TAMPERED)
    assert result.failure_reason == pb.VERIFY_FAILURE_REASON_LINK_MISMATCH


async def test_an_inserted_well_formed_record_breaks_the_link_of_the_one_after(
    log: ServedAudit, pg: asyncpg.Connection
) -> None:
    # The forger renumbers the tail and inserts a record whose own hash and link are right.
    before = await pg.fetchrow(
        "SELECT record_hash, append_time, entry FROM audit.records WHERE seq = $1", TAMPERED - 1
    )
    forged = chain.decode(before["entry"])
    forged_entry = chain.Entry(
        "0f0f0f0f-0000-4000-8000-000000000001",
        *[
            getattr(forged.entry, f)
            for f in (
                "occurred_s",
                "occurred_nanos",
                "actor",
                "action",
                "resource",
                "building_id",
                "outcome",
                "attributes",
                "personal",
            )
        ],
    )
    canonical = chain.encode(chain.Record(TAMPERED, forged.append_time_us, forged_entry))
    async with pg.transaction():
        await pg.execute("UPDATE audit.records SET seq = seq + 1000000 WHERE seq >= $1", TAMPERED)
        await pg.execute("UPDATE audit.records SET seq = seq - 999999 WHERE seq >= 1000000")
        await pg.execute(
            "INSERT INTO audit.records SELECT $1, append_time, $2::uuid, occurred_time, actor,"
            " action, resource, building_id, outcome, subjects, $3, $4, $5"
            " FROM audit.records WHERE seq = $6",
            TAMPERED,
            forged_entry.event_id,
            canonical,
            before["record_hash"],
            chain.record_hash(before["record_hash"], canonical),
            TAMPERED - 1,
        )
    result = await _verify(log)
    assert (result.ok, result.first_bad_sequence) == (False, TAMPERED + 1)
    assert result.failure_reason == pb.VERIFY_FAILURE_REASON_LINK_MISMATCH


async def test_a_rewritten_chain_is_caught_by_the_signed_checkpoint(
    log: ServedAudit, pg: asyncpg.Connection
) -> None:
    # The forger changes record 500 and recomputes every hash after it: only the checkpoint,
    # signed with a key the database does not hold, still remembers the true head.
    rows = await pg.fetch(
        "SELECT seq, entry, previous_hash FROM audit.records WHERE seq >= $1 ORDER BY seq",
        TAMPERED,
    )
    previous = rows[0]["previous_hash"]
    async with pg.transaction():
        for i, row in enumerate(rows):
            entry = row["entry"]
            if i == 0:
                entry = entry.replace(b"highs", b"HIGHS")
            digest = chain.record_hash(previous, entry)
            await pg.execute(
                "UPDATE audit.records SET entry = $1, previous_hash = $2, record_hash = $3"
                " WHERE seq = $4",
                entry,
                previous,
                digest,
                row["seq"],
            )
            previous = digest
        await pg.execute("UPDATE audit.chain_head SET head_hash = $1", previous)
    result = await _verify(log)
    assert (result.ok, result.first_bad_sequence) == (False, CHECKPOINT_AT)
    assert result.failure_reason == pb.VERIFY_FAILURE_REASON_CHECKPOINT_MISMATCH
    assert result.records_checked == CHECKPOINT_AT


async def test_a_forged_checkpoint_signature_is_rejected(
    log: ServedAudit, pg: asyncpg.Connection
) -> None:
    signature: bytes = await pg.fetchval(
        "SELECT signature FROM audit.checkpoints WHERE tree_size = $1", CHECKPOINT_AT
    )
    forged = bytes(4) + signature[4:]
    await pg.execute(
        "UPDATE audit.checkpoints SET signature = $1 WHERE tree_size = $2", forged, CHECKPOINT_AT
    )
    result = await _verify(log)
    assert (result.ok, result.first_bad_sequence) == (False, CHECKPOINT_AT)
    assert result.failure_reason == pb.VERIFY_FAILURE_REASON_SIGNATURE_INVALID


async def test_a_checkpoint_signed_by_an_untrusted_key_is_rejected(
    log: ServedAudit, pg: asyncpg.Connection
) -> None:
    head = await pg.fetchrow("SELECT seq, head_hash FROM audit.chain_head")
    impostor = Signer(Ed25519PrivateKey.generate(), log.runtime.config.origin)
    forged = impostor.sign(head["seq"], head["head_hash"], log.runtime.clock())
    log.runtime.files.write(forged, impostor.private_key.public_key())
    await log.runtime.store.add_checkpoint(to_stored(forged, "periodic"))
    result = await _verify(log)
    assert (result.ok, result.first_bad_sequence) == (False, RECORDS)
    assert result.failure_reason == pb.VERIFY_FAILURE_REASON_UNKNOWN_KEY
    assert result.anchored_sequence == CHECKPOINT_AT


async def test_a_missing_checkpoint_file_is_a_checkpoint_mismatch(log: ServedAudit) -> None:
    log.runtime.files.path(CHECKPOINT_AT).unlink()
    result = await _verify(log)
    assert (result.ok, result.first_bad_sequence) == (False, CHECKPOINT_AT)
    assert result.failure_reason == pb.VERIFY_FAILURE_REASON_CHECKPOINT_MISMATCH


async def test_a_range_after_a_deleted_record_verifies_but_not_one_starting_at_the_hole(
    log: ServedAudit, pg: asyncpg.Connection
) -> None:
    await pg.execute("DELETE FROM audit.records WHERE seq = $1", TAMPERED)
    after = await _verify(log, start_sequence=TAMPERED + 2, end_sequence=RECORDS)
    assert after.ok and after.records_checked == RECORDS - TAMPERED - 1
    at_hole = await _verify(log, start_sequence=TAMPERED + 1, end_sequence=RECORDS)
    assert (at_hole.ok, at_hole.first_bad_sequence) == (False, TAMPERED)
    assert at_hole.failure_reason == pb.VERIFY_FAILURE_REASON_GAP
