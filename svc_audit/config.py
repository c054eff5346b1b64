"""Configuration of the audit service, read from environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from meshkit import ServerConfig


@dataclass(frozen=True)
class AuditConfig(ServerConfig):
    """Every setting of the audit service; see `python -m svc_audit --help`."""
