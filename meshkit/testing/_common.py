"""Choosing a test backend from the environment, and other backend-neutral helpers.

Pure functions only: nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "DATABASE_URL_ENV",
    "REDIS_URL_ENV",
    "BackendChoice",
    "BackendMode",
    "choose_backend",
]

DATABASE_URL_ENV = "DATABASE_URL"
"""Environment variable naming an external PostgreSQL server (a ``postgresql://`` URL)."""

REDIS_URL_ENV = "REDIS_URL"
"""Environment variable naming an external Redis server (a ``redis://`` or ``unix://`` URL)."""


class BackendMode(enum.Enum):
    """Where a test backend comes from."""

    EXTERNAL = "external"
    EMBEDDED = "embedded"


@dataclass(frozen=True, slots=True)
class BackendChoice:
    """The backend to use: ``url`` is set exactly when ``mode`` is EXTERNAL."""

    mode: BackendMode
    url: str | None = None


def choose_backend(env: Mapping[str, str], variable: str) -> BackendChoice:
    """Choose external (``env[variable]`` set and not blank) or embedded.

    The URL is returned stripped of surrounding whitespace and otherwise unchanged.
    """
    url = env.get(variable, "").strip()
    if url:
        return BackendChoice(BackendMode.EXTERNAL, url)
    return BackendChoice(BackendMode.EMBEDDED)


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=user + "@" + netloc[2]))
