"""`python -m svc_audit`: read config, serve until SIGTERM."""

from meshkit import run_service
from svc_audit.config import AuditConfig
from svc_audit.service import services

if __name__ == "__main__":
    raise SystemExit(run_service("audit", AuditConfig, services))
