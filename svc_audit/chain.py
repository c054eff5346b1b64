"""The hash chain: deterministic record bytes, record hashes and chain verification.

Pure: no I/O, no gRPC. A record's canonical bytes are a versioned, length-prefixed binary
encoding of (sequence, append time, event with personal values as ciphertext); the same record
always encodes to the same bytes, and the bytes decode back to the record.

Hashing follows RFC 6962's domain separation: the entry hash is ``SHA-256(0x00 || bytes)`` (a
leaf) and the record hash is ``SHA-256(0x01 || previous_hash || entry_hash)`` (a node), so a
record's bytes can never be mistaken for a link and vice versa. Record 1 links to 32 zero bytes.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Any

ZERO_HASH = bytes(32)
FORMAT_VERSION = 1

_U32 = struct.Struct(">I")
_HEAD = struct.Struct(">BQqqIB")  # version, sequence, append_time_us, occurred_s, nanos, outcome


class FaultReason(enum.IntEnum):
    """Why verification failed; the values are those of ``VerifyFailureReason``."""

    HASH_MISMATCH = 1
    LINK_MISMATCH = 2
    GAP = 3
    CHECKPOINT_MISMATCH = 4
    SIGNATURE_INVALID = 5
    UNKNOWN_KEY = 6
    MALFORMED_RECORD = 7


@dataclass(frozen=True, slots=True)
class SealedField:
    """A personal value as stored: ciphertext under its subject's key.

    ``nonce`` and ``ciphertext`` are empty for a value whose subject was already erased when the
    event arrived: a tombstone from the start.
    """

    subject_id: str
    name: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class Entry:
    """An event as the log keeps it. ``attributes`` are sorted by key."""

    event_id: str
    occurred_s: int
    occurred_nanos: int
    actor: str
    action: str
    resource: str
    building_id: str
    outcome: int
    attributes: tuple[tuple[str, str], ...]
    personal: tuple[SealedField, ...]

    @property
    def subjects(self) -> list[str]:
        """The distinct subjects with a value in this entry, in first-seen order."""
        return list(dict.fromkeys(f.subject_id for f in self.personal))


@dataclass(frozen=True, slots=True)
class Record:
    """An entry at its place in the log."""

    sequence: int
    append_time_us: int
    entry: Entry


@dataclass(frozen=True, slots=True)
class Link:
    """A record's place in the chain: its hash and the hash it links to."""

    previous_hash: bytes
    record_hash: bytes


def _put(parts: list[bytes], value: str | bytes) -> None:
    raw = value.encode() if isinstance(value, str) else value
    parts.append(_U32.pack(len(raw)))
    parts.append(raw)


def encode(record: Record) -> bytes:
    """The canonical bytes of ``record``."""
    e = record.entry
    parts = [
        _HEAD.pack(
            FORMAT_VERSION,
            record.sequence,
            record.append_time_us,
            e.occurred_s,
            e.occurred_nanos,
            e.outcome,
        )
    ]
    for text in (e.event_id, e.actor, e.action, e.resource, e.building_id):
        _put(parts, text)
    # Personal values before attributes: a reader can tell "no personal data" from the
    # 4 bytes after the five strings, without parsing the attributes.
    parts.append(_U32.pack(len(e.personal)))
    for field in e.personal:
        _put(parts, field.subject_id)
        _put(parts, field.name)
        _put(parts, field.nonce)
        _put(parts, field.ciphertext)
    parts.append(_U32.pack(len(e.attributes)))
    for key, value in e.attributes:
        _put(parts, key)
        _put(parts, value)
    return b"".join(parts)


class MalformedRecord(ValueError):
    """Stored bytes that do not decode into a record."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def raw(self) -> bytes:
        (size,) = _U32.unpack_from(self.data, self.pos)
        start = self.pos + 4
        self.pos = start + size
        if self.pos > len(self.data):
            raise MalformedRecord("length runs past the end")
        return self.data[start : self.pos]

    def text(self) -> str:
        return self.raw().decode()

    def count(self) -> int:
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)


def decode(data: bytes) -> Record:
    """The record whose canonical bytes are ``data``; raises MalformedRecord otherwise."""
    try:
        version, sequence, append_us, occurred_s, nanos, outcome = _HEAD.unpack_from(data, 0)
        if version != FORMAT_VERSION:
            raise MalformedRecord(f"unknown format version {version}")
        r = _Reader(data, _HEAD.size)
        event_id, actor, action, resource, building_id = (r.text() for _ in range(5))
        personal = tuple(
            SealedField(r.text(), r.text(), r.raw(), r.raw()) for _ in range(r.count())
        )
        attributes = tuple((r.text(), r.text()) for _ in range(r.count()))
        if r.pos != len(data):
            raise MalformedRecord("trailing bytes")
    except (struct.error, UnicodeDecodeError) as exc:
        raise MalformedRecord(str(exc)) from exc
    entry = Entry(
        event_id,
        occurred_s,
        nanos,
        actor,
        action,
        resource,
        building_id,
        outcome,
        attributes,
        personal,
    )
    return Record(sequence, append_us, entry)


def record_hash(previous_hash: bytes, canonical: bytes) -> bytes:
    """``SHA-256(0x01 || previous_hash || SHA-256(0x00 || canonical))``."""
    leaf = hashlib.sha256(b"\x00" + canonical).digest()
    return hashlib.sha256(b"\x01" + previous_hash + leaf).digest()


def chain(previous_hash: bytes, canonicals: list[bytes]) -> list[Link]:
    """The links of consecutive records appended after a record whose hash is ``previous_hash``."""
    links: list[Link] = []
    for canonical in canonicals:
        digest = record_hash(previous_hash, canonical)
        links.append(Link(previous_hash, digest))
        previous_hash = digest
    return links


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A record as read back for verification: the hashed bytes and what the store says of them.

    The store keeps copies of some fields in columns for filtering. ``columns_agree`` says
    whether those columns (sequence, times, event id, actor, action, resource, building,
    outcome, and "no personal data" when ``subjects`` is empty) equal what the hashed bytes say;
    the store computes it where the rows are. ``subjects`` is the stored subject column, checked
    here against the bytes when not empty.
    """

    sequence: int
    previous_hash: bytes
    record_hash: bytes
    canonical: bytes
    columns_agree: bool
    subjects: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fault:
    """The first thing found wrong: where and why (no personal data in ``detail``)."""

    sequence: int
    reason: FaultReason
    detail: str


class ChainVerifier:
    """Walks records in sequence order and stops at the first fault.

    Start it with the sequence expected first and the hash that record must link to; feed rows
    in ascending order. ``previous_hash`` is then the recomputed hash of the last good record.
    """

    def __init__(self, first_sequence: int, previous_hash: bytes) -> None:
        self.expected = first_sequence
        self.previous_hash = previous_hash
        self.records_checked = 0
        self.hashes_at: dict[int, bytes] = {}

    def feed(self, row: StoredRow) -> Fault | None:
        """Check one row; returns the fault, or None and advances."""
        if row.sequence < self.expected:
            return Fault(row.sequence, FaultReason.GAP, f"sequence {row.sequence} is repeated")
        if row.sequence > self.expected:
            return Fault(self.expected, FaultReason.GAP, f"sequence {self.expected} is missing")
        self.records_checked += 1
        if row.previous_hash != self.previous_hash:
            return Fault(
                row.sequence,
                FaultReason.LINK_MISMATCH,
                "previous_hash differs from the hash of the record before",
            )
        if record_hash(row.previous_hash, row.canonical) != row.record_hash:
            return Fault(
                row.sequence, FaultReason.HASH_MISMATCH, "stored hash differs from recomputed hash"
            )
        if not row.columns_agree or row.subjects:
            try:
                decoded = decode(row.canonical)
            except MalformedRecord as exc:
                return Fault(row.sequence, FaultReason.MALFORMED_RECORD, f"cannot decode: {exc}")
            if not row.columns_agree or tuple(decoded.entry.subjects) != row.subjects:
                return Fault(
                    row.sequence,
                    FaultReason.HASH_MISMATCH,
                    "stored columns differ from hashed bytes",
                )
        self.previous_hash = row.record_hash
        self.expected += 1
        return None

    def feed_rows(self, rows: Sequence[Sequence[Any]], watch: Set[int]) -> Fault | None:
        """Check rows given as ``(sequence, previous_hash, record_hash, canonical,
        columns_agree, subjects)`` tuples (as the store reads them), in a tight loop.

        Remembers in ``hashes_at`` the record hash at each sequence in ``watch`` (checkpoint
        positions). Same checks and faults as ``feed``, which handles any row needing more than
        hashing.
        """
        sha256 = hashlib.sha256
        expected, previous = self.expected, self.previous_hash
        try:
            for row in rows:
                sequence, linked, digest, canonical, agree, subjects = row
                if (
                    sequence != expected
                    or linked != previous
                    or not agree
                    or subjects
                    or sha256(b"\x01" + previous + sha256(b"\x00" + canonical).digest()).digest()
                    != digest
                ):
                    self.expected, self.previous_hash = expected, previous
                    fault = self.feed(
                        StoredRow(sequence, linked, digest, canonical, agree, tuple(subjects or ()))
                    )
                    if fault is not None:
                        return fault
                    expected, previous = self.expected, self.previous_hash
                    self.records_checked -= 1  # counted again below
                else:
                    expected += 1
                    previous = digest
                self.records_checked += 1
                if sequence in watch:
                    self.hashes_at[sequence] = digest
            return None
        finally:
            if expected > self.expected:
                self.expected, self.previous_hash = expected, previous
