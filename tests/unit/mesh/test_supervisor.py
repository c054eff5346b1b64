"""The supervisor restarts what dies, holds what a drill kills, and stops everything by PID."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshctl.supervisor import ProcessSpec, Supervisor
from meshkit.testing import process_is_alive

SLEEPER = (sys.executable, "-c", "import time; time.sleep(600)")


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    owner = Supervisor(backoff_initial_s=0.05, backoff_max_s=0.2, poll_s=0.02)
    yield owner
    owner.stop_all(grace_s=5)


def _wait(predicate: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_a_process_that_dies_is_restarted_with_a_new_pid(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    first = supervisor.start(ProcessSpec("sleeper", SLEEPER, tmp_path / "log"))
    import os
    import signal

    os.kill(first, signal.SIGKILL)
    _wait(lambda: supervisor.pid("sleeper") not in (None, first))
    assert supervisor.restarts("sleeper") == 1


def test_a_process_that_keeps_dying_waits_longer_each_time(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    spec = ProcessSpec("crasher", (sys.executable, "-c", "raise SystemExit(3)"), tmp_path / "log")
    supervisor.start(spec)
    _wait(lambda: supervisor.restarts("crasher") >= 3)
    child = supervisor._children["crasher"]
    assert child.backoff_s == pytest.approx(0.2)  # doubled from 0.05 up to the cap


def test_a_killed_process_stays_down_until_resumed(supervisor: Supervisor, tmp_path: Path) -> None:
    supervisor.start(ProcessSpec("sleeper", SLEEPER, tmp_path / "log"))
    killed = supervisor.kill("sleeper")
    time.sleep(0.3)  # several watch rounds: no restart while held
    assert supervisor.pid("sleeper") is None and not process_is_alive(killed)
    supervisor.resume("sleeper")
    _wait(lambda: supervisor.pid("sleeper") is not None)


def test_stop_all_leaves_no_child_running(tmp_path: Path) -> None:
    owner = Supervisor()
    pids = [owner.start(ProcessSpec(f"s{i}", SLEEPER, tmp_path / f"{i}.log")) for i in range(3)]
    owner.stop_all(grace_s=5)
    assert not any(process_is_alive(pid) for pid in pids)
    assert owner.pids() == {}


def test_a_name_is_supervised_once(supervisor: Supervisor, tmp_path: Path) -> None:
    supervisor.start(ProcessSpec("one", SLEEPER, tmp_path / "log"))
    with pytest.raises(ValueError):
        supervisor.start(ProcessSpec("one", SLEEPER, tmp_path / "log"))
