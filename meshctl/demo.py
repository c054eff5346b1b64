"""``meshctl demo`` (``make demo``): the local mesh in the foreground until Ctrl-C.

Brings up both regions as ``meshctl up`` does (certificates, Envoy with mTLS, PostgreSQL,
Redis, the four services per region), shows their health through Envoy and how to call them
with grpcurl, and stops everything on Ctrl-C (or after ``seconds``).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import time
from pathlib import Path
from types import FrameType

from meshctl.catalog import GRPCURL, SERVICES

STATE_DIR = Path(".mesh")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(seconds: float | None, state_dir: Path = STATE_DIR) -> int:
    from meshctl import status  # Envoy's config types load slowly; only the demo needs them
    from meshctl.up import Mesh

    mesh = Mesh(state_dir)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print("starting both regions (certificates, Envoy, PostgreSQL, Redis, services)...")
        endpoints = mesh.start()
        status.run(mesh.state_dir)
        ingress = f"127.0.0.1:{endpoints.ports['us-east'].ingress}"
        tls = ["-cacert", str(endpoints.ca), "-cert", str(endpoints.admin_cert)]
        tls += ["-key", str(endpoints.admin_key)]

        def command(*args: str) -> str:
            return shlex.join([GRPCURL, *tls, *args])

        print("\nCall any service through the us-east ingress (mTLS, admin user certificate):")
        print("  " + command("-authority", "optimizer.hvac.local", ingress, "list"))
        print(
            "  "
            + command("-authority", "control.hvac.local", ingress, "describe", SERVICES["control"])
        )
        print(
            "  "
            + command(
                "-authority",
                "gateway.hvac.local",
                "-d",
                json.dumps({"service": SERVICES["gateway"]}),
                ingress,
                "grpc.health.v1.Health/Check",
            )
        )
        print(f"Endpoints of both regions: {mesh.state_dir / 'endpoints.json'}")
        print("Ctrl-C stops everything." if seconds is None else "", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            deadline = None if seconds is None else time.monotonic() + seconds
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        mesh.stop()
    return 0
