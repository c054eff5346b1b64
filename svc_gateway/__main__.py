"""`python -m svc_gateway`: read config, serve until SIGTERM."""

from meshkit import run_service
from svc_gateway.config import GatewayConfig
from svc_gateway.service import services

if __name__ == "__main__":
    raise SystemExit(run_service("gateway", GatewayConfig, services))
