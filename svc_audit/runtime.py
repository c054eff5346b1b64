"""Builds the audit service's parts from its configuration and runs its background jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from svc_audit import retention
from svc_audit.anchoring import Checkpointer, CheckpointFiles
from svc_audit.checkpoint import Signer, key_id_for
from svc_audit.config import AuditConfig
from svc_audit.crypto import FileKeyProvider, KeyProvider, Pkcs11KeyProvider, create_secret_file
from svc_audit.ledger import Keyring, Ledger
from svc_audit.store import AuditStore

log = logging.getLogger("svc_audit")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class MissingDatabaseUrl(SystemExit):
    """The service was started without DATABASE_URL."""

    def __init__(self) -> None:
        super().__init__(
            "svc_audit: DATABASE_URL is not set. The audit log lives in PostgreSQL: set"
            " DATABASE_URL=postgresql://user:password@host:5432/dbname and start again."
        )


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in ``path`` (PEM, PKCS#8); generated and written 0600 when missing."""
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
        create_secret_file(path, pem)
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"svc_audit: {path} does not hold an Ed25519 private key")
    return key


def trusted_keys(signer: Signer, extra_files: str) -> dict[str, Ed25519PublicKey]:
    """The signer's own public key and any further PEM public keys, by key id."""
    keys = {signer.key_id: signer.private_key.public_key()}
    for name in filter(None, (p.strip() for p in extra_files.split(","))):
        key = load_pem_public_key(Path(name).read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise SystemExit(f"svc_audit: {name} does not hold an Ed25519 public key")
        keys[key_id_for(key)] = key
    return keys


def key_provider(config: AuditConfig) -> KeyProvider:
    if config.key_provider == "pkcs11":
        return Pkcs11KeyProvider(
            config.pkcs11_library,
            config.pkcs11_token_label,
            config.pkcs11_pin,
            config.pkcs11_key_label,
        )
    if config.key_provider != "file":
        raise SystemExit(
            f"svc_audit: AUDIT_KEY_PROVIDER must be file or pkcs11, not {config.key_provider!r}"
        )
    return FileKeyProvider(config.master_key_file or config.state_dir / "master.key")


@dataclass
class Runtime:
    """Everything the servicer works with, open for as long as ``open_runtime`` is."""

    config: AuditConfig
    store: AuditStore
    ledger: Ledger
    keyring: Keyring
    checkpointer: Checkpointer
    files: CheckpointFiles
    trusted: dict[str, Ed25519PublicKey]
    clock: Clock


@contextlib.asynccontextmanager
async def open_runtime(
    config: AuditConfig, clock: Clock = utc_now, provider: KeyProvider | None = None
) -> AsyncIterator[Runtime]:
    """Migrate, connect and start the checkpoint and retention jobs; stop them on exit."""
    if not config.database_url:
        raise MissingDatabaseUrl()
    signer = Signer(
        load_signing_key(config.signing_key_file or config.state_dir / "signing-key.pem"),
        config.origin,
    )
    provider = provider or key_provider(config)
    store = await AuditStore.open(config.database_url, clock, config.db_max_connections)
    files = CheckpointFiles(config.checkpoint_dir or config.state_dir / "checkpoints")
    checkpointer = Checkpointer(
        store, signer, files, clock, config.checkpoint_every_records, config.checkpoint_interval_s
    )
    keyring = Keyring(store, provider)
    runtime = Runtime(
        config,
        store,
        Ledger(store, keyring),
        keyring,
        checkpointer,
        files,
        trusted_keys(signer, config.trusted_public_keys),
        clock,
    )
    jobs = [asyncio.create_task(checkpointer.run(), name="audit-checkpoints")]
    if config.retention_interval_s > 0:
        jobs.append(asyncio.create_task(_retention_loop(runtime), name="audit-retention"))
    try:
        yield runtime
    finally:
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError):
                await job
        try:  # anchor everything appended before a clean shutdown
            await asyncio.wait_for(checkpointer.sign_head(), 5.0)
        except Exception as exc:
            log.warning("final checkpoint skipped", extra={"error": type(exc).__name__})
        await store.close()
        close = getattr(provider, "close", None)
        if close is not None:
            close()


async def _retention_loop(runtime: Runtime) -> None:
    while True:
        try:
            cutoff = retention.cutoff_for(runtime.clock(), runtime.config.retention_days)
            await retention.apply(runtime.store, runtime.checkpointer, cutoff)
        except Exception as exc:  # an outage must not end the job; it runs again next time
            log.warning("retention deferred", extra={"error": type(exc).__name__})
        await asyncio.sleep(runtime.config.retention_interval_s)
