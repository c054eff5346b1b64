"""Crypto-shredding: EraseSubject destroys the subject's key; the chain still verifies."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import asyncpg
import grpc
import pytest
from hvac.audit.v1 import audit_service_pb2 as pb
from hvac.audit.v1 import records_pb2

from svc_audit import chain
from svc_audit.testing import ServedAudit, make_event

ALICE = ("user-7", "email", "alice@example.org")
BOB = ("user-8", "display_name", "Bob Builder")
ERASED = records_pb2.PERSONAL_FIELD_STATE_ERASED
AVAILABLE = records_pb2.PERSONAL_FIELD_STATE_AVAILABLE


async def _records(audit: ServedAudit, **fields: object) -> list[records_pb2.AuditRecord]:
    request = pb.QueryRequest(**fields)  # type: ignore[arg-type]
    return [r async for m in audit.stub.Query(request) for r in m.records]


async def _erase(audit: ServedAudit, subject: str, **fields: str) -> pb.EraseSubjectResponse:
    request = pb.EraseSubjectRequest(subject_id=subject, reason="GDPR Art. 17 request 42", **fields)
    response: pb.EraseSubjectResponse = await audit.stub.EraseSubject(request)
    return response


async def test_personal_values_are_stored_as_ciphertext_and_read_back_in_plaintext(
    audit: ServedAudit, pg: asyncpg.Connection
) -> None:
    await audit.stub.Append(pb.AppendRequest(event=make_event(1, personal=[ALICE, BOB])))
    (record,) = await _records(audit)
    assert [(f.subject_id, f.name, f.state, f.value) for f in record.personal_fields] == [
        (ALICE[0], ALICE[1], AVAILABLE, ALICE[2]),
        (BOB[0], BOB[1], AVAILABLE, BOB[2]),
    ]
    assert not record.event.personal_data
    stored = await pg.fetchval("SELECT entry FROM audit.records WHERE seq = 1")
    assert b"alice" not in stored and b"Bob" not in stored


async def test_after_erasure_values_read_as_tombstones_and_the_chain_verifies(
    audit: ServedAudit,
) -> None:
    await audit.stub.Append(pb.AppendRequest(event=make_event(1, personal=[ALICE, BOB])))
    await audit.stub.Append(pb.AppendRequest(event=make_event(2, personal=[ALICE])))
    await audit.stub.Append(pb.AppendRequest(event=make_event(3)))
    erased = await _erase(audit, ALICE[0])
    assert (erased.records_affected, erased.erasure_sequence) == (2, 4)

    first, second, _plain, erasure = await _records(audit)
    alice, bob = first.personal_fields
    assert (alice.state, alice.value, alice.erase_time) == (ERASED, "", erased.erase_time)
    assert (bob.state, bob.value) == (AVAILABLE, BOB[2])
    assert [f.state for f in second.personal_fields] == [ERASED]
    assert (await audit.stub.VerifyChain(pb.VerifyChainRequest())).ok

    assert erasure.event.action == "audit.subject.erased"
    assert erasure.event.attributes["subject_id"] == ALICE[0]
    assert erasure.event.attributes["records_affected"] == "2"
    assert not erasure.personal_fields
    assert ALICE[2] not in str(erasure)


async def test_the_erased_key_exists_nowhere(
    audit: ServedAudit,
    pg: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await audit.stub.Append(pb.AppendRequest(event=make_event(1, personal=[ALICE])))
    wrapped: bytes = await pg.fetchval(
        "SELECT wrapped_key FROM audit.subject_keys WHERE subject_id = $1", ALICE[0]
    )
    key = audit.runtime.keyring.provider.unwrap(wrapped)
    traces = [key, key.hex().encode(), base64.b64encode(key), wrapped, wrapped.hex().encode()]

    await _erase(audit, ALICE[0])

    tables = await pg.fetch(
        "SELECT c.oid::regclass::text AS name, pg_relation_filepath(c.oid) AS file"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'audit' AND c.relkind IN ('r', 'p')"
    )
    for table in tables:
        dump = "\n".join(str(tuple(r)) for r in await pg.fetch(f"SELECT * FROM {table['name']}"))
        assert not any(t.decode(errors="ignore") in dump for t in traces[1:]), table["name"]
    data_dir = await pg.fetchval("SELECT current_setting('data_directory', true)")
    keys_file = next(t["file"] for t in tables if t["name"] == "audit.subject_keys")
    if data_dir and Path(data_dir, keys_file).exists():  # readable when the server is local
        raw = Path(data_dir, keys_file).read_bytes()
        assert wrapped not in raw and key not in raw
    for item in Path(audit.runtime.config.state_dir).rglob("*"):
        if item.is_file() and item.name != "master.key":
            assert not any(t in item.read_bytes() for t in traces), item
    logged = "\n".join(r.getMessage() + str(vars(r)) for r in caplog.records)
    assert not any(t.decode(errors="ignore") in logged for t in traces[1:])
    assert audit.runtime.keyring._cache.get(ALICE[0]) is None


async def test_values_sent_after_erasure_are_tombstones_from_the_start(
    audit: ServedAudit, pg: asyncpg.Connection
) -> None:
    await _erase(audit, ALICE[0])  # never seen before: zero records, still keeps values out
    await audit.stub.Append(pb.AppendRequest(event=make_event(5, personal=[ALICE, BOB])))
    (_, record) = await _records(audit)
    assert [f.state for f in record.personal_fields] == [ERASED, AVAILABLE]
    stored = chain.decode(await pg.fetchval("SELECT entry FROM audit.records WHERE seq = 2"))
    assert (stored.entry.personal[0].nonce, stored.entry.personal[0].ciphertext) == (b"", b"")


async def test_a_repeated_erasure_returns_the_first_answer(audit: ServedAudit) -> None:
    await audit.stub.Append(pb.AppendRequest(event=make_event(1, personal=[ALICE])))
    first = await _erase(audit, ALICE[0], request_id="0192f0c4-7d0e-7b6a-9a61-3c1f9b2e4d55")
    again = await _erase(audit, ALICE[0])
    assert again == first
    assert len(await _records(audit)) == 2


async def test_a_request_id_reused_for_another_subject_is_already_exists(
    audit: ServedAudit,
) -> None:
    request_id = "0192f0c4-7d0e-7b6a-9a61-3c1f9b2e4d55"
    await _erase(audit, ALICE[0], request_id=request_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _erase(audit, BOB[0], request_id=request_id)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_an_event_resent_after_erasure_is_still_a_duplicate(audit: ServedAudit) -> None:
    event = make_event(1, personal=[ALICE])
    first = await audit.stub.Append(pb.AppendRequest(event=event))
    await _erase(audit, ALICE[0])
    again = await audit.stub.Append(pb.AppendRequest(event=event))
    assert again.duplicate and again.sequence == first.sequence


async def test_query_by_subject_finds_its_records_erased_or_not(audit: ServedAudit) -> None:
    await audit.stub.Append(pb.AppendRequest(event=make_event(1, personal=[ALICE])))
    await audit.stub.Append(pb.AppendRequest(event=make_event(2, personal=[BOB])))
    await audit.stub.Append(pb.AppendRequest(event=make_event(3, personal=[ALICE, BOB])))
    await _erase(audit, ALICE[0])
    assert [r.sequence for r in await _records(audit, subject_id=ALICE[0])] == [1, 3]


async def test_a_cleared_subject_column_is_found_by_verification(
    audit: ServedAudit, pg: asyncpg.Connection
) -> None:
    await audit.stub.Append(pb.AppendRequest(event=make_event(1, personal=[ALICE])))
    await audit.stub.Append(pb.AppendRequest(event=make_event(2)))
    await pg.execute("ALTER TABLE audit.records DISABLE TRIGGER USER")
    await pg.execute("UPDATE audit.records SET subjects = '{}' WHERE seq = 1")
    result = await audit.stub.VerifyChain(pb.VerifyChainRequest())
    assert (result.ok, result.first_bad_sequence) == (False, 1)
    assert result.failure_reason == pb.VERIFY_FAILURE_REASON_HASH_MISMATCH


async def test_an_altered_ciphertext_is_data_loss_on_read_not_a_crash(
    audit: ServedAudit, pg: asyncpg.Connection
) -> None:
    await audit.stub.Append(pb.AppendRequest(event=make_event(1, personal=[ALICE])))
    stored: bytes = await pg.fetchval("SELECT entry FROM audit.records WHERE seq = 1")
    sealed = chain.decode(stored).entry.personal[0]
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    await pg.execute("ALTER TABLE audit.records DISABLE TRIGGER USER")
    await pg.execute(
        "UPDATE audit.records SET entry = $1 WHERE seq = 1",
        stored.replace(sealed.ciphertext, flipped),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _records(audit)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    result = await audit.stub.VerifyChain(pb.VerifyChainRequest())
    assert (result.ok, result.first_bad_sequence) == (False, 1)
    assert result.failure_reason == pb.VERIFY_FAILURE_REASON_HASH_MISMATCH
