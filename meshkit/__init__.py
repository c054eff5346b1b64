"""The shared runtime of every service in the mesh."""

from meshkit.config import ConfigError, env, from_env
from meshkit.errors import FieldViolation, abort, invalid_argument, rich_status
from meshkit.main import run_service, static_services
from meshkit.server import RunningServer, ServerConfig, Service, serve
from meshkit.validation import ValidationInterceptor, violations

__all__ = [
    "ConfigError",
    "FieldViolation",
    "RunningServer",
    "ServerConfig",
    "Service",
    "ValidationInterceptor",
    "abort",
    "env",
    "from_env",
    "invalid_argument",
    "rich_status",
    "run_service",
    "serve",
    "static_services",
    "violations",
]
