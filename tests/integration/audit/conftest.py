"""Fixtures of the audit service tests: a real service in process, on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from svc_audit.testing import ServedAudit, audit_config, served_audit


@pytest.fixture
async def audit(database_url: str, tmp_path: Path) -> AsyncIterator[ServedAudit]:
    """The audit service on a fresh database, served on a free loopback port."""
    async with served_audit(audit_config(database_url, tmp_path)) as served:
        yield served
