"""The PKCS#11 key provider against a real SoftHSM2 token (master key never leaves it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hvac.audit.v1 import audit_service_pb2 as pb
from hvac.audit.v1 import records_pb2

from svc_audit import crypto
from svc_audit.crypto import KeyProviderError, Pkcs11KeyProvider
from svc_audit.testing import audit_config, make_event, served_audit

LIBRARIES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
PIN = "246810"


def _softhsm_library() -> str | None:
    return next((p for p in LIBRARIES if Path(p).exists()), None)


def _install_softhsm() -> str | None:
    """Install softhsm2 when missing and possible (root with apt-get); else the reason why not."""
    if _softhsm_library() and shutil.which("softhsm2-util"):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "SoftHSM2 is not installed and cannot be (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "softhsm2"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"installing softhsm2 failed: {done.stderr.strip()[-300:]}"
    return None if _softhsm_library() else "softhsm2 installed but its library was not found"


@dataclass(frozen=True)
class Token:
    library: str
    label: str
    pin: str


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
    """A fresh SoftHSM2 token in a temporary folder (SOFTHSM2_CONF points at it)."""
    reason = _install_softhsm()
    if reason is not None:
        pytest.skip(reason)
    library = _softhsm_library()
    assert library is not None
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n")
    before = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "hvac-audit-test",
         "--pin", PIN, "--so-pin", "13579111"],
        check=True, capture_output=True,
    )  # fmt: skip
    yield Token(library, "hvac-audit-test", PIN)
    if before is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = before


@pytest.fixture
def providers(token: Token) -> Iterator[Callable[[str], Pkcs11KeyProvider]]:
    """Opens providers on the token by master key label; closes their sessions after the test."""
    opened: list[Pkcs11KeyProvider] = []

    def open_provider(key_label: str) -> Pkcs11KeyProvider:
        opened.append(Pkcs11KeyProvider(token.library, token.label, token.pin, key_label))
        return opened[-1]

    yield open_provider
    for provider in opened:
        provider.close()


Providers = Callable[[str], Pkcs11KeyProvider]


def test_a_subject_key_wrapped_on_the_token_unwraps_there(providers: Providers) -> None:
    provider = providers("master-a")
    key = crypto.new_subject_key()
    wrapped = provider.wrap(key)
    assert key not in wrapped and len(wrapped) > len(key)
    assert provider.unwrap(wrapped) == key


def test_the_master_key_is_a_sensitive_unextractable_token_object(providers: Providers) -> None:
    import pkcs11

    provider = providers("master-b")
    master = provider._key
    assert master[pkcs11.Attribute.TOKEN] is True
    assert master[pkcs11.Attribute.SENSITIVE] is True
    assert master[pkcs11.Attribute.EXTRACTABLE] is False
    with pytest.raises(pkcs11.PKCS11Error):
        master[pkcs11.Attribute.VALUE]


def test_the_master_key_persists_on_the_token_across_sessions(providers: Providers) -> None:
    first = providers("master-c")
    wrapped = first.wrap(b"k" * 32)
    first.close()
    again = providers("master-c")
    assert again.unwrap(wrapped) == b"k" * 32


def test_a_key_wrapped_by_another_master_does_not_unwrap(providers: Providers) -> None:
    wrapped = providers("master-d").wrap(b"k" * 32)
    other = providers("master-e")
    with pytest.raises(KeyProviderError):
        other.unwrap(wrapped)


def test_a_wrong_pin_is_a_provider_error(token: Token) -> None:
    # Runs with no session of the token open: PKCS#11 logins are per process and token.
    with pytest.raises(KeyProviderError):
        Pkcs11KeyProvider(token.library, token.label, "000000", "master-a")


async def test_the_service_seals_and_shreds_with_the_token_provider(
    token: Token, database_url: str, tmp_path: Path
) -> None:
    config = audit_config(
        database_url,
        tmp_path,
        key_provider="pkcs11",
        pkcs11_library=token.library,
        pkcs11_token_label=token.label,
        pkcs11_pin=token.pin,
        pkcs11_key_label="service-master",
    )
    async with served_audit(config) as audit:
        event = make_event(1, personal=[("user-9", "email", "carol@example.org")])
        await audit.stub.Append(pb.AppendRequest(event=event))
        query = [r async for m in audit.stub.Query(pb.QueryRequest()) for r in m.records]
        assert query[0].personal_fields[0].value == "carol@example.org"
        await audit.stub.EraseSubject(pb.EraseSubjectRequest(subject_id="user-9", reason="test"))
        query = [r async for m in audit.stub.Query(pb.QueryRequest()) for r in m.records]
        field = query[0].personal_fields[0]
        assert (field.state, field.value) == (records_pb2.PERSONAL_FIELD_STATE_ERASED, "")
        assert not (tmp_path / "master.key").exists()
