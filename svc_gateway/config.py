"""Configuration of the gateway service, read from environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from meshkit import ServerConfig


@dataclass(frozen=True)
class GatewayConfig(ServerConfig):
    """Every setting of the gateway service; see `python -m svc_gateway --help`."""
