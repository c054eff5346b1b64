"""`python -m svc_optimizer`: read config, serve until SIGTERM."""

from meshkit import run_service
from svc_optimizer.config import OptimizerConfig
from svc_optimizer.service import services

if __name__ == "__main__":
    raise SystemExit(run_service("optimizer", OptimizerConfig, services))
