"""Configuration of the optimizer service, read from environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from meshkit import ServerConfig


@dataclass(frozen=True)
class OptimizerConfig(ServerConfig):
    """Every setting of the optimizer service; see `python -m svc_optimizer --help`."""
