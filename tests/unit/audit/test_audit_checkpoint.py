"""Signed checkpoints: the note layout, signatures and the copy kept outside the database."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from svc_audit import checkpoint
from svc_audit.chain import FaultReason
from svc_audit.checkpoint import Signer

WHEN = datetime(2026, 11, 27, 15, 4, 5, 123456, tzinfo=UTC)
HEAD = bytes(range(32))


def _signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate(), "hvac.local/audit/us-east")


def test_the_note_has_origin_size_base64_head_and_time_one_per_line() -> None:
    cp = _signer().sign(1000, HEAD, WHEN)
    assert cp.note.decode().split("\n") == [
        "hvac.local/audit/us-east",
        "1000",
        base64.b64encode(HEAD).decode(),
        "2026-11-27T15:04:05.123456Z",
        "",
    ]


def test_a_checkpoint_verifies_with_the_signers_public_key() -> None:
    signer = _signer()
    cp = signer.sign(1000, HEAD, WHEN)
    assert checkpoint.check(cp, {signer.key_id: signer.private_key.public_key()}) is None


def test_an_altered_signature_or_field_is_rejected() -> None:
    from dataclasses import replace

    signer = _signer()
    trusted = {signer.key_id: signer.private_key.public_key()}
    cp = signer.sign(1000, HEAD, WHEN)
    forged = replace(cp, signature=bytes(4) + cp.signature[4:])
    assert checkpoint.check(forged, trusted) == FaultReason.SIGNATURE_INVALID
    assert checkpoint.check(replace(cp, tree_size=999), trusted) == FaultReason.CHECKPOINT_MISMATCH


def test_a_checkpoint_of_an_unconfigured_key_is_unknown() -> None:
    cp = _signer().sign(1000, HEAD, WHEN)
    other = _signer()
    assert (
        checkpoint.check(cp, {other.key_id: other.private_key.public_key()})
        == FaultReason.UNKNOWN_KEY
    )


def test_the_signed_note_file_round_trips() -> None:
    signer = _signer()
    cp = signer.sign(1000, HEAD, WHEN)
    text = checkpoint.to_signed_note(cp, signer.private_key.public_key())
    assert text.decode().split("\n")[5].startswith("\u2014 " + signer.key_id + " ")
    assert checkpoint.from_signed_note(text) == cp
