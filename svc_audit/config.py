"""Configuration of the audit service, read from environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshkit import ServerConfig, env


@dataclass(frozen=True)
class AuditConfig(ServerConfig):
    """Every setting of the audit service; see `python -m svc_audit --help`.

    ``database_url`` is required: without it the service refuses to start and says so.
    Files (signing key, master key, checkpoint copies) default to folders under ``state_dir``.
    """

    database_url: str = env(
        "DATABASE_URL", "", "PostgreSQL URL (required); the schema `audit` is migrated at start"
    )
    origin: str = env("AUDIT_ORIGIN", "hvac.local/audit/local", "log name in signed checkpoints")
    actor: str = env(
        "AUDIT_ACTOR",
        "spiffe://hvac.local/ns/hvac/sa/audit",
        "SPIFFE ID the service logs its own events (erasures) under",
    )
    state_dir: Path = env(
        "AUDIT_STATE_DIR", Path("var/audit"), "folder for keys and checkpoint copies by default"
    )
    signing_key_file: Path | None = env(
        "AUDIT_SIGNING_KEY_FILE",
        None,
        "Ed25519 private key (PEM); created when missing; default <state_dir>/signing-key.pem",
    )
    trusted_public_keys: str = env(
        "AUDIT_TRUSTED_PUBLIC_KEYS",
        "",
        "comma-separated PEM files of further Ed25519 public keys trusted for checkpoints",
    )
    checkpoint_dir: Path | None = env(
        "AUDIT_CHECKPOINT_DIR",
        None,
        "folder outside the database for checkpoint copies; default <state_dir>/checkpoints",
    )
    checkpoint_every_records: int = env(
        "AUDIT_CHECKPOINT_EVERY_RECORDS", 1000, "sign a checkpoint after this many records"
    )
    checkpoint_interval_s: float = env(
        "AUDIT_CHECKPOINT_INTERVAL_S",
        60.0,
        "sign a checkpoint at least this often (if new records)",
    )
    key_provider: str = env("AUDIT_KEY_PROVIDER", "file", "master key holder: file or pkcs11")
    master_key_file: Path | None = env(
        "AUDIT_MASTER_KEY_FILE",
        None,
        "32-byte master key (file provider); created when missing; default <state_dir>/master.key",
    )
    pkcs11_library: str = env("AUDIT_PKCS11_LIBRARY", "", "PKCS#11 module path (pkcs11 provider)")
    pkcs11_token_label: str = env("AUDIT_PKCS11_TOKEN", "", "token label (pkcs11 provider)")
    pkcs11_pin: str = env("AUDIT_PKCS11_PIN", "", "user PIN (pkcs11 provider)")
    pkcs11_key_label: str = env(
        "AUDIT_PKCS11_KEY_LABEL", "hvac-audit-master", "label of the master AES key on the token"
    )
    retention_days: int = env(
        "AUDIT_RETENTION_DAYS", 2557, "keep records this long (whole months older are dropped)"
    )
    retention_interval_s: float = env(
        "AUDIT_RETENTION_INTERVAL_S", 3600.0, "how often the retention job runs; 0 disables it"
    )
    db_max_connections: int = env("AUDIT_DB_MAX_CONNECTIONS", 10, "PostgreSQL pool size")
