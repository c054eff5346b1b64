"""Process and temporary-directory helpers shared by the embedded test servers.

Stopping a process is guarded against PID reuse: a PID is signalled only while it
is alive and (where procfs exists) its command line contains a marker, normally
the server's private temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["process_is_alive"]


def _proc_state(stat_text: str) -> str:
    """Return the state letter from the text of a Linux ``/proc/<pid>/stat`` file."""
    return stat_text.rpartition(")")[2].split()[0]


def process_is_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie (exited, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = _proc_state(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError):
        return True  # no procfs: existence is all we know
    return state not in ("Z", "X")


def _is_ours(pid: int, marker: str) -> bool:
    """True if ``pid`` is alive and (where procfs exists) its command line contains ``marker``.

    Guards against signalling an unrelated process that reused the PID.
    """
    if not process_is_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        # Either it just exited or there is no procfs; without procfs, assume ours.
        return process_is_alive(pid) and not Path("/proc/self").exists()
    except OSError:
        return False
    return marker.encode() in cmdline


def _stop_pid(pid: int, marker: str, first_signal: signal.Signals, timeout: float) -> None:
    """Send ``first_signal``, then SIGKILL, while ``pid`` is alive and ours (see _is_ours)."""
    for sig in (first_signal, signal.SIGKILL):
        if not _is_ours(pid, marker):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while process_is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    if process_is_alive(pid):
        raise RuntimeError(f"process {pid} survived SIGKILL")


def _remove_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def _private_tempdir(prefix: str, base_dir: Path | str | None) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base_dir)).resolve()


EmbeddedT = TypeVar("EmbeddedT")


class OwnedServer(Generic[EmbeddedT]):
    """What embedded and external servers share: who owns the process, and where it lives.

    An embedded server was started by this object, which owns its PID and temporary folder
    and stops it; an external one is only used.
    """

    _root: Path | None
    _pid: int | None
    _embedded: EmbeddedT | None

    @property
    def is_embedded(self) -> bool:
        """True if this object started (and owns) the server."""
        return self._root is not None

    @property
    def pid(self) -> int | None:
        """PID of the embedded server process (None for external servers); kept after stop()."""
        return self._pid

    @property
    def data_dir(self) -> Path | None:
        """Temporary directory of the embedded server (None for external); gone after stop()."""
        return self._root

    @property
    def running(self) -> bool:
        """For embedded servers, whether stop() has not run yet; always True for external."""
        return self._root is None or self._embedded is not None
