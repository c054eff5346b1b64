"""The hash chain's record bytes, hashes and verifier (pure)."""

from __future__ import annotations

import hashlib

import pytest

from svc_audit import chain
from svc_audit.chain import ChainVerifier, Entry, FaultReason, Record, SealedField, StoredRow


def _entry(n: int = 1, personal: tuple[SealedField, ...] = ()) -> Entry:
    return Entry(
        event_id=f"00000000-0000-0000-0000-{n:012d}",
        occurred_s=1_790_000_000 + n,
        occurred_nanos=123_456_789,
        actor="spiffe://hvac.local/svc/control",
        action="control.plan.applied",
        resource=f"buildings/hq-1/zones/z-{n}",
        building_id="hq-1",
        outcome=1,
        attributes=(("plan_id", "p-1"), ("solver", "highs")),
        personal=personal,
    )


def test_canonical_bytes_decode_back_to_the_same_record() -> None:
    sealed = SealedField("user-7", "email", b"n" * 12, b"ciphertext")
    record = Record(42, 1_790_000_000_000_001, _entry(personal=(sealed,)))
    assert chain.decode(chain.encode(record)) == record


def test_the_same_record_always_encodes_to_the_same_bytes() -> None:
    record = Record(1, 5, _entry())
    assert chain.encode(record) == chain.encode(Record(1, 5, _entry()))


def test_every_field_changes_the_bytes() -> None:
    base = chain.encode(Record(1, 5, _entry()))
    assert chain.encode(Record(2, 5, _entry())) != base
    assert chain.encode(Record(1, 6, _entry())) != base
    assert chain.encode(Record(1, 5, _entry(2))) != base


def test_record_hash_is_a_domain_separated_node_over_the_leaf() -> None:
    canonical = b"record bytes"
    leaf = hashlib.sha256(b"\x00" + canonical).digest()
    expected = hashlib.sha256(b"\x01" + chain.ZERO_HASH + leaf).digest()
    assert chain.record_hash(chain.ZERO_HASH, canonical) == expected


def test_truncated_or_padded_bytes_are_malformed() -> None:
    canonical = chain.encode(Record(1, 5, _entry()))
    for broken in (canonical[:-1], canonical + b"\x00", b"\x09" + canonical[1:]):
        with pytest.raises(chain.MalformedRecord):
            chain.decode(broken)


def _rows(count: int) -> list[StoredRow]:
    canonicals = [chain.encode(Record(i + 1, 5, _entry(i + 1))) for i in range(count)]
    links = chain.chain(chain.ZERO_HASH, canonicals)
    return [
        StoredRow(i + 1, links[i].previous_hash, links[i].record_hash, canonicals[i], True)
        for i in range(count)
    ]


def _first_fault(rows: list[StoredRow]) -> tuple[int, FaultReason] | None:
    verifier = ChainVerifier(1, chain.ZERO_HASH)
    for row in rows:
        fault = verifier.feed(row)
        if fault is not None:
            return fault.sequence, fault.reason
    return None


def test_an_intact_chain_has_no_fault() -> None:
    assert _first_fault(_rows(5)) is None


def test_a_missing_record_is_a_gap_at_its_sequence() -> None:
    rows = _rows(5)
    assert _first_fault(rows[:2] + rows[3:]) == (3, FaultReason.GAP)


def test_a_repeated_record_is_a_gap_at_the_repeated_sequence() -> None:
    rows = _rows(5)
    assert _first_fault(rows[:3] + rows[2:]) == (3, FaultReason.GAP)


def test_swapped_records_are_a_link_mismatch_at_the_first_position() -> None:
    from dataclasses import replace

    rows = _rows(5)
    swapped = [*rows[:2], replace(rows[3], sequence=3), replace(rows[2], sequence=4), rows[4]]
    assert _first_fault(swapped) == (3, FaultReason.LINK_MISMATCH)


def test_changed_bytes_or_columns_are_a_hash_mismatch() -> None:
    from dataclasses import replace

    rows = _rows(3)
    changed = replace(rows[1], canonical=rows[1].canonical.replace(b"highs", b"HIGHS"))
    assert _first_fault([rows[0], changed, rows[2]]) == (2, FaultReason.HASH_MISMATCH)
    relabelled = replace(rows[1], columns_agree=False)
    assert _first_fault([rows[0], relabelled, rows[2]]) == (2, FaultReason.HASH_MISMATCH)
    other_subjects = replace(rows[1], subjects=("user-1",))
    assert _first_fault([rows[0], other_subjects, rows[2]]) == (2, FaultReason.HASH_MISMATCH)


def test_a_subject_column_matching_the_bytes_verifies() -> None:
    sealed = SealedField("user-1", "email", b"n" * 12, b"c")
    canonical = chain.encode(Record(1, 5, _entry(1, personal=(sealed,))))
    digest = chain.record_hash(chain.ZERO_HASH, canonical)
    row = StoredRow(1, chain.ZERO_HASH, digest, canonical, True, ("user-1",))
    assert _first_fault([row]) is None


def test_well_hashed_garbage_is_a_malformed_record() -> None:
    garbage = b"\x01not a record"
    row = StoredRow(1, chain.ZERO_HASH, chain.record_hash(chain.ZERO_HASH, garbage), garbage, False)
    assert _first_fault([row]) == (1, FaultReason.MALFORMED_RECORD)


def _batch_fault(rows: list[StoredRow]) -> tuple[int, FaultReason] | None:
    verifier = ChainVerifier(1, chain.ZERO_HASH)
    as_tuples = [
        (r.sequence, r.previous_hash, r.record_hash, r.canonical, r.columns_agree, list(r.subjects))
        for r in rows
    ]
    fault = verifier.feed_rows(as_tuples, watch=set())
    return None if fault is None else (fault.sequence, fault.reason)


def test_the_batch_path_finds_the_same_faults_as_the_row_path() -> None:
    from dataclasses import replace

    rows = _rows(6)
    cases = [
        rows,
        rows[:2] + rows[3:],
        rows[:3] + rows[2:],
        [*rows[:2], replace(rows[3], sequence=3), replace(rows[2], sequence=4), *rows[4:]],
        [*rows[:4], replace(rows[4], columns_agree=False), rows[5]],
        [*rows[:1], replace(rows[1], canonical=b"\x01junk"), *rows[2:]],
    ]
    for case in cases:
        assert _batch_fault(case) == _first_fault(case)


def test_the_batch_path_remembers_hashes_at_watched_sequences() -> None:
    rows = _rows(5)
    verifier = ChainVerifier(1, chain.ZERO_HASH)
    batch: list[tuple[object, ...]] = [
        (r.sequence, r.previous_hash, r.record_hash, r.canonical, True, []) for r in rows
    ]
    assert verifier.feed_rows(batch, watch={2, 5}) is None
    assert verifier.hashes_at == {2: rows[1].record_hash, 5: rows[4].record_hash}
    assert (verifier.records_checked, verifier.expected) == (5, 6)
