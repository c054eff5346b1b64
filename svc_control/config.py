"""Configuration of the control service, read from environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    control_loop: bool = env(
        "HVAC_CONTROL_LOOP",
        True,
        "run the MPC loop for the buildings of this region (off: registry and sessions only)",
    )
    mesh_egress: str = env(
        "HVAC_MESH_EGRESS",
        "",
        "host:port of this service's Envoy egress; reaches the optimizer and audit when their "
        "own addresses are empty",
    )
    optimizer_address: str = env(
        "HVAC_OPTIMIZER_ADDRESS",
        "",
        "host:port of the optimizer; empty: through the mesh egress, or no optimizer (every "
        "interval is planned by the fallback thermostat)",
    )
    audit_address: str = env(
        "HVAC_AUDIT_ADDRESS",
        "",
        "host:port of the audit service; empty: through the mesh egress, or decisions are only "
        "logged",
    )
    outbox_dir: Path = env(
        "HVAC_CONTROL_OUTBOX_DIR",
        Path("var/control/outbox"),
        "durable spool of audit events not yet acknowledged by audit (one subfolder per region)",
    )
    solve_deadline_s: float = env(
        "HVAC_CONTROL_SOLVE_DEADLINE_S",
        5.0,
        "real seconds the optimizer gets per interval; after it the best schedule so far is "
        "used, or the fallback thermostat",
    )
    control_interval_s: float = env(
        "HVAC_CONTROL_INTERVAL_S",
        0.0,
        "re-plan every building this often, in clock seconds; 0: each building's own "
        "control_interval (15 min unless set)",
    )
    horizon_steps: int = env("HVAC_CONTROL_HORIZON_STEPS", 96, "control intervals planned ahead")
    time_acceleration: float = env(
        "HVAC_CONTROL_TIME_ACCELERATION",
        1.0,
        "1: real time; N > 1: simulated time starting now and running N times faster (for "
        "simulated buildings)",
    )

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
        if not self.time_acceleration >= 1.0:
            raise ConfigError("HVAC_CONTROL_TIME_ACCELERATION must be at least 1")
        if not self.solve_deadline_s > 1.0:
            raise ConfigError("HVAC_CONTROL_SOLVE_DEADLINE_S must be more than 1 second")
        if self.control_interval_s and not 60.0 <= self.control_interval_s <= 3600.0:
            raise ConfigError("HVAC_CONTROL_INTERVAL_S must be 0 or between 60 and 3600")
        if not 1 <= self.horizon_steps <= 672:
            raise ConfigError("HVAC_CONTROL_HORIZON_STEPS must be between 1 and 672")
