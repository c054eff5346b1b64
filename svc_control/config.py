"""Configuration of the control service, read from environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from meshkit import ServerConfig


@dataclass(frozen=True)
class ControlConfig(ServerConfig):
    """Every setting of the control service; see `python -m svc_control --help`."""
