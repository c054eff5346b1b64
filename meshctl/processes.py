"""Start a service as a real subprocess, as an operator would, and stop it by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ServiceProcess:
    """``python -m svc_<name>`` on a free loopback port; ``stop()`` sends SIGTERM to it alone."""

    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    _folder: tempfile.TemporaryDirectory[str] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> ServiceProcess:
        self._folder = tempfile.TemporaryDirectory(prefix=f"svc-{self.name}-")
        port_file = Path(self._folder.name) / "port"
        log = (Path(self._folder.name) / "log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                f"svc_{self.name}",
                "--port",
                "0",
                "--port-file",
                str(port_file),
            ],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise RuntimeError(f"svc_{self.name} did not start:\n{output}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def output(self) -> str:
        if self._folder is None:
            return ""
        log = Path(self._folder.name) / "log"
        return log.read_text(errors="replace") if log.exists() else ""

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait for a graceful exit (SIGKILL after ``timeout_s``); the exit code."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            code = self.process.returncode
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
        return code

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
