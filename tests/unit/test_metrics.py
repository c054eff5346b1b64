from __future__ import annotations

import urllib.request

from prometheus_client import Counter

from meshkit.metrics import start_exporter

SERVED = Counter("hvac_test_exported_total", "a counter the exporter test reads back")


def test_a_negative_port_disables_the_exporter() -> None:
    assert start_exporter(-1) is None


def test_the_exporter_serves_registered_metrics_on_loopback() -> None:
    SERVED.inc(3)
    exporter = start_exporter(0)
    assert exporter is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=10) as r:
            body = r.read().decode()
        assert "hvac_test_exported_total 3.0" in body
    finally:
        exporter.close()
