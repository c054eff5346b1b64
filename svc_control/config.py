"""Configuration of the control service, read from environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from meshkit import ConfigError, ServerConfig, env

REGIONS = ("us-east", "eu-west")


@dataclass(frozen=True)
class ControlConfig(ServerConfig):
    """Every setting of the control service; see `python -m svc_control --help`."""

    database_url: str = env(
        "DATABASE_URL",
        "",
        "PostgreSQL URL (postgresql://user@host/db); required: the `control` schema lives there",
    )
    redis_url: str = env(
        "REDIS_URL", "", "Redis URL (redis:// or unix://) for the latest-state cache; required"
    )
    redis_key_prefix: str = env(
        "HVAC_CONTROL_REDIS_PREFIX", "hvac:control:", "prefix of every Redis key this service uses"
    )
    region: str = env("HVAC_REGION", "us-east", "region this instance serves: us-east or eu-west")
    heartbeat_interval_s: float = env(
        "HVAC_CONTROL_HEARTBEAT_INTERVAL_S",
        10.0,
        "device sessions get a Heartbeat after this many seconds without other messages",
    )
    telemetry_interval_s: float = env(
        "HVAC_CONTROL_TELEMETRY_INTERVAL_S",
        60.0,
        "devices send telemetry at least this often; a session silent for 3 intervals is closed",
    )
    db_pool_size: int = env("HVAC_CONTROL_DB_POOL_SIZE", 10, "PostgreSQL connections at most")

    def __post_init__(self) -> None:
        # Raised while the config is read, so `python -m svc_control` stops with a usage error
        # naming the variable instead of a traceback.
        if not self.database_url:
            raise ConfigError(
                "DATABASE_URL is not set: the control service keeps its registry, commands and "
                "telemetry in PostgreSQL (e.g. DATABASE_URL=postgresql://control@127.0.0.1/hvac)"
            )
        if not self.redis_url:
            raise ConfigError(
                "REDIS_URL is not set: the control service caches the latest building state in "
                "Redis (e.g. REDIS_URL=redis://127.0.0.1:6379/0)"
            )
        if self.region not in REGIONS:
            raise ConfigError(f"HVAC_REGION={self.region!r}: expected one of {list(REGIONS)}")
        if self.heartbeat_interval_s <= 0 or self.telemetry_interval_s <= 0:
            raise ConfigError("heartbeat and telemetry intervals must be positive")
