"""``meshctl demo``: start the four services on loopback and show how to reach them.

This is the local shape of what works today: each service serves its API (RPCs answer
UNIMPLEMENTED until they are built), health and reflection.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from types import FrameType

from meshctl.catalog import SERVICES, grpcurl
from meshctl.processes import ServiceProcess


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _health(address: str) -> str:
    reply = grpcurl(address, "grpc.health.v1.Health/Check", timeout_s=10)
    if reply.returncode != 0:
        return reply.stderr.strip()
    status: str = json.loads(reply.stdout)["status"]
    return status


def run(seconds: float | None) -> int:
    started: list[ServiceProcess] = []
    try:
        for name in SERVICES:
            started.append(ServiceProcess(name).start())
        print(f"{'service':<10} {'address':<16} health")
        for process in started:
            print(f"{process.name:<10} {process.address:<16} {_health(process.address)}")
        first = started[0]
        print("\nTry:")
        print(f"  grpcurl -plaintext {first.address} list")
        print(f"  grpcurl -plaintext {first.address} describe {SERVICES[first.name]}")
        print(f"  grpcurl -plaintext {first.address} grpc.health.v1.Health/Check")
        print("(grpcurl is in .venv/bin.)", "Ctrl-C stops." if seconds is None else "", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, _interrupt)
            deadline = None if seconds is None else time.monotonic() + seconds
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
                dead = [p.name for p in started if p.process and p.process.poll() is not None]
                if dead:
                    print(f"stopped unexpectedly: {', '.join(dead)}")
                    return 1
    finally:
        for process in started:
            process.stop()
    return 0
