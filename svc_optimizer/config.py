"""Configuration of the optimizer service, read from environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from meshkit import ServerConfig, env


@dataclass(frozen=True)
class OptimizerConfig(ServerConfig):
    """Every setting of the optimizer service; see `python -m svc_optimizer --help`."""

    max_concurrent_solves: int = env(
        "HVAC_OPTIMIZER_MAX_SOLVES", 4, "solves run at once; more are RESOURCE_EXHAUSTED"
    )
    rpc_margin_s: float = env(
        "HVAC_OPTIMIZER_RPC_MARGIN_S",
        0.05,
        "time kept back from the RPC deadline to send the final update, plus the fraction below",
    )
    rpc_margin_fraction: float = env(
        "HVAC_OPTIMIZER_RPC_MARGIN_FRACTION",
        0.1,
        "share of the time left before the RPC deadline also kept back (stopping solvers on a "
        "busy machine takes longer)",
    )
    breaker_failures: int = env(
        "HVAC_OPTIMIZER_BREAKER_FAILURES", 3, "consecutive failures that open a backend's breaker"
    )
    breaker_open_s: float = env(
        "HVAC_OPTIMIZER_BREAKER_OPEN_S", 30.0, "seconds an open breaker waits before a probe"
    )
    redis_url: str = env(
        "REDIS_URL", "", "Redis for the result cache (redis://host:port/db); empty disables it"
    )
    redis_key_prefix: str = env(
        "HVAC_OPTIMIZER_REDIS_PREFIX", "hvac:optimizer:", "prefix of every cache key"
    )
    cache_ttl_s: int = env("HVAC_OPTIMIZER_CACHE_TTL_S", 3600, "seconds a cached result is kept")
    dwave_token: str = env(
        "DWAVE_API_TOKEN", "", "D-Wave Leap token; with it (or a dwave config file) the QPU runs"
    )
    qpu_direct_max_variables: int = env(
        "HVAC_OPTIMIZER_QPU_DIRECT_MAX_VARIABLES",
        64,
        "largest binary model sent to the QPU directly; larger ones go to Leap hybrid CQM",
    )
