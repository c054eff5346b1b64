"""``meshctl down``: stop the mesh that ``meshctl up`` started from a state directory.

The background process stops its children in order when it gets SIGTERM. Should it not exit in
time, it is killed, and every PID it recorded in ``endpoints.json`` that still runs is killed
too, so nothing is left behind. Only PIDs recorded by ``meshctl up`` are ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from meshctl.up import ENDPOINTS_FILE, PID_FILE, Endpoints
from meshkit.testing import process_is_alive


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while process_is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def run(state_dir: Path, timeout_s: float = 60.0) -> int:
    """Stop everything; 0 when nothing of the mesh is left running."""
    state_dir = state_dir.resolve()
    pid_file = state_dir / PID_FILE
    recorded: dict[str, int] = {}
    if (state_dir / ENDPOINTS_FILE).exists():
        recorded = Endpoints.load(state_dir).pids
    if not pid_file.exists():
        print(f"no mesh is running from {state_dir}")
        return 0
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout_s):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5)
    left = {name: p for name, p in recorded.items() if process_is_alive(p)}
    for p in left.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        pid_file.unlink()
    if left:
        print(f"killed processes that outlived the mesh: {sorted(left)}")
    print("mesh is down")
    return 0
