"""Start, watch and stop the mesh's processes, by PID.

A ``Supervisor`` starts each process from a ``ProcessSpec``, restarts one that dies on its own
after a backoff that doubles while it keeps dying quickly (``backoff_initial_s`` up to
``backoff_max_s``; reset once it has run ``stable_after_s``), and stops them in reverse start
order: SIGTERM, then SIGKILL after a grace period. It only ever signals PIDs it started.
``kill(name)`` is for failure drills: SIGKILL, and no restart until ``resume(name)``.
On Linux every child also gets SIGTERM if the supervising process dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("meshctl.supervisor")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcessSpec:
    """What to run: ``argv`` with ``env`` added to ours, output appended to ``log_path``."""

    name: str
    argv: tuple[str, ...]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Child:
    spec: ProcessSpec
    process: subprocess.Popen[bytes]
    started_at: float
    restarts: int = 0
    backoff_s: float = 0.0
    restart_at: float | None = None
    held: bool = False


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel for SIGTERM when we die.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Owns a set of named child processes; thread-safe."""

    def __init__(
        self,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        stable_after_s: float = 10.0,
        poll_s: float = 0.1,
        on_restart: Callable[[str, int], None] | None = None,
    ) -> None:
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s
        self._poll_s = poll_s
        self._on_restart = on_restart
        self._children: dict[str, _Child] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._watcher.start()

    def start(self, spec: ProcessSpec) -> int:
        """Start ``spec`` now; its PID. A name may be started once."""
        with self._lock:
            if spec.name in self._children:
                raise ValueError(f"{spec.name} is already supervised")
            process = self._spawn(spec)
            self._children[spec.name] = _Child(spec, process, time.monotonic())
            return process.pid

    def _spawn(self, spec: ProcessSpec) -> subprocess.Popen[bytes]:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as out:
            return subprocess.Popen(
                spec.argv,
                env={**os.environ, **spec.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop children in order
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def pid(self, name: str) -> int | None:
        """PID of ``name`` while it runs, else None."""
        with self._lock:
            child = self._children.get(name)
            if child is None or child.process.poll() is not None:
                return None
            return child.process.pid

    def pids(self) -> dict[str, int]:
        """PIDs of every running child, by name."""
        with self._lock:
            return {n: c.process.pid for n, c in self._children.items() if c.process.poll() is None}

    def restarts(self, name: str) -> int:
        """How many times ``name`` has been restarted after dying."""
        with self._lock:
            return self._children[name].restarts

    def kill(self, name: str) -> int:
        """SIGKILL ``name`` and keep it down until :meth:`resume`; the killed PID."""
        with self._lock:
            child = self._children[name]
            child.held = True
            pid = child.process.pid
            if child.process.poll() is None:
                child.process.kill()
        child.process.wait()
        return pid

    def resume(self, name: str) -> None:
        """Let a killed ``name`` start again now."""
        with self._lock:
            child = self._children[name]
            child.held = False
            child.restart_at = time.monotonic()

    def _watch(self) -> None:
        while not self._stopping.wait(self._poll_s):
            with self._lock:
                for name, child in self._children.items():
                    try:
                        self._check(name, child)
                    except OSError:  # e.g. the command vanished; try again after the backoff
                        log.exception("restart failed", extra={"child": name})
                        child.restart_at = time.monotonic() + self.backoff_max_s

    def _check(self, name: str, child: _Child) -> None:
        if child.held or child.process.poll() is None:
            return
        now = time.monotonic()
        if child.restart_at is None:
            ran_s = now - child.started_at
            if ran_s >= self.stable_after_s or child.backoff_s == 0.0:
                child.backoff_s = self.backoff_initial_s
            else:
                child.backoff_s = min(child.backoff_s * 2, self.backoff_max_s)
            child.restart_at = now + child.backoff_s
            log.warning(
                "process exited; restarting",
                extra={"child": name, "code": child.process.returncode, "in_s": child.backoff_s},
            )
            return
        if now < child.restart_at:
            return
        child.process = self._spawn(child.spec)
        child.started_at, child.restart_at = now, None
        child.restarts += 1
        if self._on_restart is not None:
            self._on_restart(name, child.process.pid)

    def stop(self, name: str, grace_s: float = 10.0) -> int | None:
        """SIGTERM ``name`` (SIGKILL after ``grace_s``), stop supervising it; its exit code."""
        with self._lock:
            child = self._children.pop(name, None)
        if child is None:
            return None
        return _terminate(child.process, grace_s)

    def stop_all(self, grace_s: float = 10.0) -> None:
        """Stop every child: SIGTERM to all (the last started first), then wait for each,
        SIGKILL whatever outlives ``grace_s``; then stop watching."""
        self._stopping.set()
        with self._lock:
            children = list(self._children.values())[::-1]
            self._children.clear()
        for child in children:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        for child in children:
            _terminate(child.process, grace_s)
        if self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5)


def _terminate(process: subprocess.Popen[bytes], grace_s: float) -> int:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
