"""`python -m svc_control`: read config, serve until SIGTERM."""

from meshkit import run_service
from svc_control.config import ControlConfig
from svc_control.service import services

if __name__ == "__main__":
    raise SystemExit(run_service("control", ControlConfig, services))
