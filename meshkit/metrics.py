"""Prometheus metrics: one exporter per process, on loopback, off unless a port is configured.

Services declare their metrics at module level with ``prometheus_client`` (names start with
``hvac_``) and update them where the figure is known; ``start_exporter`` serves them at
``http://127.0.0.1:<port>/metrics`` for Prometheus to scrape.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

log = logging.getLogger("meshkit.metrics")


@dataclass
class Exporter:
    """A running ``/metrics`` endpoint; ``close()`` stops it."""

    server: WSGIServer
    thread: Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_exporter(port: int, host: str = "127.0.0.1") -> Exporter | None:
    """Serve every registered metric on ``host:port`` (0: a free port); ``port < 0``: none."""
    if port < 0:
        return None
    server, thread = start_http_server(port, addr=host)
    exporter = Exporter(server, thread)
    log.info("metrics exporter", extra={"port": exporter.port})
    return exporter
