"""The local mesh: certificates, Envoy configs, PostgreSQL, Redis, two regions of services.

``Mesh(state_dir).start()`` does everything ``meshctl up`` promises, in this process, and
``stop()`` undoes it; tests and ``make demo`` use it directly. ``meshctl up`` runs the same
thing in a background process (``python -m meshctl.up --serve DIR``) and returns once the mesh
is healthy; ``meshctl down`` signals that process, which stops everything it started.

The state directory holds ``pki/`` (CA and certificates), ``sds/`` and ``envoy/`` (what Envoy
reads), ``logs/``, ``meshctl.pid`` and ``endpoints.json`` (see :class:`Endpoints`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from meshctl.envoy_clusters import ENVOY_SOURCE_ADDRESS
from meshctl.envoy_config import (
    ENVOY,
    RenderOptions,
    StateLayout,
    cert_name,
    identities,
    render,
    validate,
    write_sds,
)
from meshctl.pki import MESH_DNS_NAMES, Pki
from meshctl.status import ClientIdentity, check_health
from meshctl.supervisor import ProcessSpec, Supervisor
from meshctl.topology import RegionPorts, Topology, allocate_ports
from meshkit.testing import (
    PostgresServer,
    RedisServer,
    postgres_server_from_env,
    redis_server_from_env,
)

ADMIN_USER = "admin"
PID_FILE = "meshctl.pid"
ENDPOINTS_FILE = "endpoints.json"


@dataclass(frozen=True)
class Endpoints:
    """What ``endpoints.json`` tells a client: addresses per region and the files to use."""

    ports: dict[str, RegionPorts]
    ca: Path
    admin_cert: Path
    admin_key: Path
    pids: dict[str, int]

    def to_json(self) -> dict[str, object]:
        return {
            "regions": {
                region: {
                    "ingress": f"127.0.0.1:{p.ingress}",
                    "admin": f"127.0.0.1:{p.admin}",
                    "ports": p.to_json(),
                }
                for region, p in self.ports.items()
            },
            "ca": str(self.ca),
            "admin_user": {"cert": str(self.admin_cert), "key": str(self.admin_key)},
            "pids": self.pids,
        }

    @classmethod
    def load(cls, state_dir: Path) -> Endpoints:
        data = json.loads((state_dir / ENDPOINTS_FILE).read_text())
        return cls(
            ports={r: RegionPorts.from_json(v["ports"]) for r, v in data["regions"].items()},
            ca=Path(data["ca"]),
            admin_cert=Path(data["admin_user"]["cert"]),
            admin_key=Path(data["admin_user"]["key"]),
            pids={k: int(v) for k, v in data["pids"].items()},
        )


class Mesh:
    """Both regions of the local mesh, owned by this process."""

    def __init__(
        self,
        state_dir: Path,
        topology: Topology | None = None,
        options: RenderOptions | None = None,
        supervisor: Supervisor | None = None,
        database_url: str | None = None,
        redis_url: str | None = None,
    ) -> None:
        """``database_url`` / ``redis_url`` name servers to use as they are; when None, the
        servers named by ``DATABASE_URL`` / ``REDIS_URL`` are used, or embedded ones started."""
        self.state_dir = state_dir.resolve()
        self.topology = topology or Topology()
        self.options = options or RenderOptions()
        self.layout = StateLayout(self.state_dir)
        self.pki = Pki(self.layout.pki, self.topology.trust_domain)
        self.supervisor = supervisor or Supervisor()
        self.ports: dict[str, RegionPorts] = {}
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.database_url = database_url or ""
        self.redis_url = redis_url or ""

    # ------------------------------------------------------------------ certificates, configs

    def issue_certificates(self) -> None:
        """(Re-)issue every certificate the Envoys present, and the admin user's."""
        for region in self.topology.regions:
            secrets = {}
            for secret, spiffe_id in identities(self.topology, region).items():
                dns = MESH_DNS_NAMES if secret == "envoy" else ()
                secrets[secret] = self.pki.issue(
                    cert_name(region, secret), spiffe_id, dns_names=dns
                )
            write_sds(self.layout, region, secrets)
        self.pki.issue_user(ADMIN_USER, "admin")

    def render_configs(self) -> list[Path]:
        """Write and validate both bootstraps; raises RuntimeError naming what Envoy rejected."""
        paths = []
        for region in self.topology.regions:
            path = render(self.topology, region, self.ports, self.layout, self.options)
            result = validate(path)
            if result.returncode != 0:
                raise RuntimeError(f"envoy rejected {path}:\n{result.stdout}{result.stderr}")
            paths.append(path)
        return paths

    # ------------------------------------------------------------------ processes

    def _start_backends(self) -> None:
        if not self.database_url:
            self.postgres = postgres_server_from_env()
            if self.postgres.is_embedded:
                self.database_url = _run(self.postgres.create_database("hvac"))
            else:
                self.database_url = self.postgres.admin_url
        if not self.redis_url:
            self.redis = redis_server_from_env()
            self.redis_url = self.redis.url

    def _service_env(self, region: str, service: str) -> dict[str, str]:
        return {
            "HVAC_REGION": region,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "HVAC_MESH_EGRESS": f"127.0.0.1:{self.ports[region].egress[service]}",
            "HVAC_TRUSTED_PROXIES": ENVOY_SOURCE_ADDRESS,
            # Both regions append to one chain in one database, so they share its master and
            # checkpoint-signing keys; a per-region folder would split the chain's trust.
            "AUDIT_STATE_DIR": str(self.state_dir / "audit"),
            "HVAC_CONTROL_OUTBOX_DIR": str(self.state_dir / "control" / "outbox"),
            "PYTHONUNBUFFERED": "1",
        }

    def process_name(self, region: str, service: str) -> str:
        """The supervisor's name for ``service`` in ``region`` (``us-east/optimizer``)."""
        return f"{region}/{service}"

    def start(self, timeout_s: float = 90.0) -> Endpoints:
        """Bring everything up and wait until healthy; on failure stop what started and raise."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.ports = allocate_ports(self.topology)
            self.pki.renew_ca_if_ending()
            self.issue_certificates()
            self.render_configs()
            self._start_backends()
            logs = self.state_dir / "logs"
            for region in self.topology.regions:
                for spec in self.topology.services:
                    port = self.ports[region].services[spec.name]
                    self.supervisor.start(
                        ProcessSpec(
                            self.process_name(region, spec.name),
                            (sys.executable, *spec.argv, "--port", str(port)),
                            logs / f"{region}.{spec.name}.log",
                            self._service_env(region, spec.name),
                        )
                    )
            for region in self.topology.regions:
                argv = (
                    *(ENVOY, "-c", str(self.layout.bootstrap(region)), "--disable-hot-restart"),
                    *("--concurrency", "1", "--log-level", "warn"),
                )
                self.supervisor.start(
                    ProcessSpec(f"{region}/envoy", argv, logs / f"{region}.envoy.log")
                )
            self.wait_healthy(timeout_s)
            endpoints = self.endpoints()
            _write_json(self.state_dir / ENDPOINTS_FILE, endpoints.to_json())
            return endpoints
        except BaseException:
            self.stop()
            raise

    def endpoints(self) -> Endpoints:
        admin = self.pki.paths(f"user.{ADMIN_USER}")
        pids = self.supervisor.pids()
        if self.postgres is not None and self.postgres.pid is not None:
            pids["postgres"] = self.postgres.pid
        if self.redis is not None and self.redis.pid is not None:
            pids["redis"] = self.redis.pid
        return Endpoints(self.ports, self.pki.ca_cert, admin.cert, admin.key, pids)

    def unhealthy_hosts(self) -> list[str]:
        """Envoy hosts (``region cluster host``) not yet marked healthy; unreachable admins too."""
        waiting = []
        for region in self.topology.regions:
            url = f"http://127.0.0.1:{self.ports[region].admin}/clusters"
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    text = reply.read().decode()
            except OSError:
                waiting.append(f"{region} admin")
                continue
            for line in text.splitlines():
                cluster, _, rest = line.partition("::")
                checked = "::health_flags::" in rest and not cluster.startswith("egress_")
                if checked and not rest.endswith("::health_flags::healthy"):
                    waiting.append(f"{region} {cluster} {rest.split('::')[0]}")
        return waiting

    def not_served_locally(self) -> list[str]:
        """``region/service`` pairs whose health check through the region's ingress is not
        SERVING from that region's own instance."""
        admin = self.pki.paths(f"user.{ADMIN_USER}")
        identity = ClientIdentity(self.pki.ca_cert, admin.cert, admin.key)
        waiting = []
        for region in self.topology.regions:
            address = f"127.0.0.1:{self.ports[region].ingress}"
            for spec in self.topology.services:
                report = check_health(address, spec.name, spec.grpc_service, identity, 2.0)
                if (report.status, report.served_by) != ("SERVING", region):
                    waiting.append(f"{region}/{spec.name}")
        return waiting

    def wait_healthy(self, timeout_s: float) -> None:
        """Until every Envoy sees every endpoint healthy and every service answers SERVING
        through its region's ingress from its own region; TimeoutError names the rest."""
        deadline = time.monotonic() + timeout_s
        while waiting := self.unhealthy_hosts() or self.not_served_locally():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not healthy after {timeout_s}s: {waiting}; logs in {self.state_dir}/logs"
                )
            time.sleep(0.2)

    def rotate_certificates(self) -> None:
        """Re-issue every certificate while running; Envoy reloads them from the files."""
        self.issue_certificates()

    def stop(self) -> None:
        """Stop every process this mesh started and the embedded databases; idempotent."""
        self.supervisor.stop_all()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / ENDPOINTS_FILE).unlink()


def _run(coroutine: Coroutine[Any, Any, str]) -> str:
    return asyncio.run(coroutine)


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------- background mode


def serve(state_dir: Path) -> int:
    """Run the mesh until SIGTERM/SIGINT (the body of ``meshctl up``'s background process)."""
    stop = False
    started = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True
        if not started:  # abandon a start in progress; start() stops what it began
            raise SystemExit(1)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    mesh = Mesh(state_dir)
    try:
        mesh.start()
        started = True
        print("ready", flush=True)
        while not stop:
            time.sleep(0.2)
    finally:
        mesh.stop()
        with contextlib.suppress(FileNotFoundError):
            (state_dir / PID_FILE).unlink()
    return 0


def launch(state_dir: Path, timeout_s: float = 180.0) -> int:
    """``meshctl up``: start :func:`serve` in the background; return once it is ready."""
    import subprocess

    state_dir = state_dir.resolve()
    pid_file = state_dir / PID_FILE
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        print(f"a mesh is already running from {state_dir} (pid {pid_file.read_text()})")
        return 1
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "meshctl.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "meshctl.up", "--serve", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command and the terminal's Ctrl-C
        )
    pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while not (state_dir / ENDPOINTS_FILE).exists():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.terminate()
                process.wait(60)
            print(f"the mesh did not come up; see {log_path}:")
            print(log_path.read_text(errors="replace")[-3000:])
            return 1
        time.sleep(0.2)
    print(f"mesh is up (pid {process.pid}); endpoints in {state_dir / ENDPOINTS_FILE}")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        raise SystemExit(serve(Path(sys.argv[2])))
    raise SystemExit("usage: python -m meshctl.up --serve STATE_DIR")
