"""Sealing personal values per subject, and the file key provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from svc_audit import crypto
from svc_audit.crypto import FileKeyProvider, KeyProviderError


def _aad(name: str = "email") -> bytes:
    return crypto.envelope_aad(
        "0192f0c4-7d0e-7b6a-9a61-3c1f9b2e4d55",
        1,
        "spiffe://hvac.local/x",
        "a.b",
        "r",
        "",
        "u",
        name,
    )


def test_a_sealed_value_opens_with_its_key_and_envelope() -> None:
    key = crypto.new_subject_key()
    nonce, ct = crypto.seal(key, "alice@example.org", _aad())
    assert b"alice" not in ct
    assert crypto.open_sealed(key, nonce, ct, _aad()) == "alice@example.org"


def test_a_value_moved_to_another_field_does_not_open() -> None:
    key = crypto.new_subject_key()
    nonce, ct = crypto.seal(key, "alice@example.org", _aad("email"))
    with pytest.raises(ValueError):
        crypto.open_sealed(key, nonce, ct, _aad("display_name"))


def test_each_seal_uses_a_fresh_nonce() -> None:
    key = crypto.new_subject_key()
    assert crypto.seal(key, "x", _aad())[0] != crypto.seal(key, "x", _aad())[0]


def test_the_file_provider_creates_a_private_master_key_and_unwraps_what_it_wraps(
    tmp_path: Path,
) -> None:
    provider = FileKeyProvider(tmp_path / "master.key")
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    key = crypto.new_subject_key()
    wrapped = provider.wrap(key)
    assert key not in wrapped
    assert FileKeyProvider(tmp_path / "master.key").unwrap(wrapped) == key


def test_a_key_wrapped_under_another_master_does_not_unwrap(tmp_path: Path) -> None:
    wrapped = FileKeyProvider(tmp_path / "a.key").wrap(crypto.new_subject_key())
    with pytest.raises(KeyProviderError):
        FileKeyProvider(tmp_path / "b.key").unwrap(wrapped)
