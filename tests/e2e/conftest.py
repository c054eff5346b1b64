"""A whole local mesh (both regions, real Envoy, PostgreSQL, Redis) for the e2e tests.

``mesh`` is module-scoped: one mesh per test module, stopped at teardown even when a test failed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshctl.up import Mesh
from tests.e2e.e2e_helpers import probe_topology


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running = Mesh(tmp_path_factory.mktemp("mesh"), probe_topology())
    try:
        running.start(timeout_s=120)
        yield running
    finally:
        running.stop()
