"""Signed checkpoints: "the first N records end in this hash", signed with Ed25519.

Pure: no I/O. The signed note follows the C2SP tlog-checkpoint layout (origin, tree size in
decimal, head hash in standard base64, then the signing time in RFC 3339 UTC; one line each).
The copy kept outside the database is a C2SP signed note: the note, a blank line, and one
signature line ``— <key_id> <base64(key hash (4 bytes) || signature)>``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from svc_audit.chain import FaultReason

_SIGNATURE_PREFIX = "\u2014 "  # em dash and a space, as signed notes have it


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement of the log's state; ``note`` is exactly the signed bytes."""

    origin: str
    tree_size: int
    head_hash: bytes
    sign_time: datetime
    key_id: str
    signature: bytes
    note: bytes


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_for(key: Ed25519PublicKey, name: str = "audit") -> str:
    """A stable key id: ``<name>+<first 8 hex digits of SHA-256 of the raw public key>``."""
    return f"{name}+{hashlib.sha256(public_bytes(key)).hexdigest()[:8]}"


def _key_hash(key_id: str, key: Ed25519PublicKey) -> bytes:
    # The signed-note key hash: binds the signature line to the key name and algorithm (0x01).
    return hashlib.sha256(key_id.encode() + b"\n\x01" + public_bytes(key)).digest()[:4]


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def note_bytes(origin: str, tree_size: int, head_hash: bytes, sign_time: datetime) -> bytes:
    """The signed text of a checkpoint."""
    head = base64.b64encode(head_hash).decode()
    return f"{origin}\n{tree_size}\n{head}\n{_rfc3339(sign_time)}\n".encode()


@dataclass(frozen=True)
class Signer:
    """An Ed25519 private key and the key id checkpoints name it by."""

    private_key: Ed25519PrivateKey
    origin: str

    @property
    def key_id(self) -> str:
        return key_id_for(self.private_key.public_key())

    def sign(self, tree_size: int, head_hash: bytes, sign_time: datetime) -> Checkpoint:
        sign_time = sign_time.astimezone(UTC)
        note = note_bytes(self.origin, tree_size, head_hash, sign_time)
        signature = self.private_key.sign(note)
        return Checkpoint(
            self.origin, tree_size, head_hash, sign_time, self.key_id, signature, note
        )


def check(checkpoint: Checkpoint, trusted: Mapping[str, Ed25519PublicKey]) -> FaultReason | None:
    """None if ``checkpoint`` is signed by a trusted key and its note states its fields.

    UNKNOWN_KEY for an untrusted key id, SIGNATURE_INVALID for a bad signature, and
    CHECKPOINT_MISMATCH when the signed note and the fields disagree.
    """
    key = trusted.get(checkpoint.key_id)
    if key is None:
        return FaultReason.UNKNOWN_KEY
    try:
        key.verify(checkpoint.signature, checkpoint.note)
    except InvalidSignature:
        return FaultReason.SIGNATURE_INVALID
    expected = note_bytes(
        checkpoint.origin, checkpoint.tree_size, checkpoint.head_hash, checkpoint.sign_time
    )
    if expected != checkpoint.note:
        return FaultReason.CHECKPOINT_MISMATCH
    return None


def to_signed_note(checkpoint: Checkpoint, key: Ed25519PublicKey) -> bytes:
    """The copy kept outside the database (a C2SP signed note)."""
    blob = base64.b64encode(_key_hash(checkpoint.key_id, key) + checkpoint.signature).decode()
    return checkpoint.note + f"\n{_SIGNATURE_PREFIX}{checkpoint.key_id} {blob}\n".encode()


class MalformedNote(ValueError):
    """A checkpoint file that is not a signed note of a checkpoint."""


def from_signed_note(data: bytes) -> Checkpoint:
    """Parse a copy written by ``to_signed_note``; raises MalformedNote."""
    try:
        note, _, signatures = data.decode().partition("\n\n")
        lines = note.split("\n")
        origin, size, head, when = lines
        first = signatures.split("\n")[0]
        if not first.startswith(_SIGNATURE_PREFIX):
            raise MalformedNote("no signature line")
        key_id, blob = first[len(_SIGNATURE_PREFIX) :].split(" ")
        raw = base64.b64decode(blob, validate=True)
        sign_time = datetime.strptime(when, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return Checkpoint(
            origin,
            int(size),
            base64.b64decode(head, validate=True),
            sign_time,
            key_id,
            raw[4:],
            (note + "\n").encode(),
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedNote(str(exc)) from exc
