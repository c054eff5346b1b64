"""Crypto-shredding: personal values encrypted per data subject, subject keys wrapped by a master.

Each personal value is sealed with AES-256-GCM under its subject's key, with a fresh 96-bit nonce,
and the record envelope (event id, times, actor, action, resource, building, subject, field
name) as associated data: a ciphertext moved to another record or field does not open. Subject
keys are stored only wrapped by a master key that a ``KeyProvider`` holds; destroying the
wrapped subject key makes every value of the subject unreadable for good.

Two providers: ``FileKeyProvider`` (a 32-byte master key in a file, for local mode) and
``Pkcs11KeyProvider`` (an AES key generated inside a PKCS#11 token, never extractable; wrapping
and unwrapping run on the token).
"""

from __future__ import annotations

import os
import secrets
import struct
import threading
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SUBJECT_KEY_BYTES = 32
NONCE_BYTES = 12
_WRAP_AAD = b"hvac.audit.subject-key.v1"


class KeyProviderError(RuntimeError):
    """The key provider cannot be reached or refused an operation (callers retry later)."""


class KeyProvider(Protocol):
    """Holds the master key; wraps and unwraps subject keys. Implementations are thread-safe."""

    @property
    def key_id(self) -> str:
        """Names the master key, stored beside each wrapped key."""
        ...

    def wrap(self, subject_key: bytes) -> bytes:
        """The subject key encrypted under the master key."""
        ...

    def unwrap(self, wrapped: bytes) -> bytes:
        """The subject key; raises KeyProviderError if ``wrapped`` does not open."""
        ...


def new_subject_key() -> bytes:
    return secrets.token_bytes(SUBJECT_KEY_BYTES)


def _len_prefixed(*parts: str | bytes) -> bytes:
    out = bytearray()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


def envelope_aad(
    event_id: str,
    occurred_us: int,
    actor: str,
    action: str,
    resource: str,
    building_id: str,
    subject_id: str,
    name: str,
) -> bytes:
    """The associated data binding a sealed value to its record and field."""
    return _len_prefixed(
        event_id, str(occurred_us), actor, action, resource, building_id, subject_id, name
    )


def seal(subject_key: bytes, plaintext: str, aad: bytes) -> tuple[bytes, bytes]:
    """``(nonce, ciphertext)``: ``plaintext`` under ``subject_key`` with a fresh nonce."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce, AESGCM(subject_key).encrypt(nonce, plaintext.encode(), aad)


def open_sealed(subject_key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> str:
    """The plaintext; raises ValueError if the value or its envelope was altered."""
    try:
        return AESGCM(subject_key).decrypt(nonce, ciphertext, aad).decode()
    except InvalidTag as exc:
        raise ValueError("personal value does not open with its envelope") from exc


def create_secret_file(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` (mode 0600) unless it exists; durable and race-free.

    The content goes to a private temporary file first and is linked into place, so instances
    starting together end up sharing whichever file was complete first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another instance made it first: use theirs
    finally:
        tmp.unlink()


class FileKeyProvider:
    """A master key in a file readable only by its owner; created (0600) when missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            create_secret_file(path, secrets.token_bytes(32))
        master = path.read_bytes()
        if len(master) != 32:
            raise KeyProviderError(f"{path}: a master key file holds exactly 32 bytes")
        self._aead = AESGCM(master)
        self._key_id = "file:" + path.name

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, subject_key: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, subject_key, _WRAP_AAD)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _WRAP_AAD)
        except InvalidTag as exc:
            raise KeyProviderError("wrapped key does not open with this master key") from exc


class Pkcs11KeyProvider:
    """A master AES-256 key inside a PKCS#11 token (an HSM, or SoftHSM2 in tests).

    The key is found by ``key_label`` and generated on the token when missing, as a sensitive,
    non-extractable token object: it never leaves the token. Wrapping is AES-GCM on the token.
    """

    def __init__(self, library_path: str, token_label: str, pin: str, key_label: str) -> None:
        import pkcs11  # imported here: local mode does not need the library

        self._pkcs11: Any = pkcs11
        try:
            token = pkcs11.lib(library_path).get_token(token_label=token_label)
            try:
                self._session: Any = token.open(user_pin=pin, rw=True)
            except pkcs11.UserAlreadyLoggedIn:
                # Login is per process and token: another session of ours already logged in.
                self._session = token.open(rw=True)
            self._key: Any = self._find_or_generate(key_label)
        except pkcs11.PKCS11Error as exc:
            raise KeyProviderError(f"PKCS#11 token {token_label!r}: {exc!r}") from exc
        self._lock = threading.Lock()  # a PKCS#11 session serves one operation at a time
        self._key_id = f"pkcs11:{token_label}/{key_label}"

    def _find_or_generate(self, key_label: str) -> Any:
        pkcs11 = self._pkcs11
        try:
            return self._session.get_key(
                key_type=pkcs11.KeyType.AES,
                object_class=pkcs11.ObjectClass.SECRET_KEY,
                label=key_label,
            )
        except pkcs11.NoSuchKey:
            attr = pkcs11.Attribute
            return self._session.generate_key(
                pkcs11.KeyType.AES,
                256,
                label=key_label,
                store=True,
                template={attr.SENSITIVE: True, attr.EXTRACTABLE: False},
            )

    @property
    def key_id(self) -> str:
        return self._key_id

    def _gcm(self, nonce: bytes) -> tuple[Any, Any]:
        mechanisms = self._pkcs11.mechanisms
        return mechanisms.Mechanism.AES_GCM, mechanisms.GCMParams(nonce, _WRAP_AAD)

    def wrap(self, subject_key: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        mechanism, param = self._gcm(nonce)
        try:
            with self._lock:
                sealed = self._key.encrypt(subject_key, mechanism=mechanism, mechanism_param=param)
        except self._pkcs11.PKCS11Error as exc:
            raise KeyProviderError(f"PKCS#11 wrap failed: {exc!r}") from exc
        return nonce + bytes(sealed)

    def unwrap(self, wrapped: bytes) -> bytes:
        mechanism, param = self._gcm(wrapped[:NONCE_BYTES])
        try:
            with self._lock:
                plain = self._key.decrypt(
                    wrapped[NONCE_BYTES:], mechanism=mechanism, mechanism_param=param
                )
        except self._pkcs11.PKCS11Error as exc:
            raise KeyProviderError(f"PKCS#11 unwrap failed: {exc!r}") from exc
        return bytes(plain)

    def close(self) -> None:
        """End the token session (the key stays on the token); idempotent."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None
