"""The ``meshctl`` subcommands of the local mesh: up, down, status, certs, envoy render."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_STATE_DIR = Path(".mesh")
COMMANDS = ("up", "down", "status", "certs", "envoy")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the mesh subcommands on ``meshctl``'s parser."""

    def with_state_dir(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: .mesh"
        )
        return parser

    with_state_dir(commands.add_parser("up", help="start both regions in the background"))
    with_state_dir(commands.add_parser("down", help="stop everything `up` started"))
    with_state_dir(commands.add_parser("status", help="health per region and service"))
    certs = commands.add_parser("certs", help="certificates of the mesh's CA")
    certs_commands = certs.add_subparsers(dest="certs_command", required=True)
    user = with_state_dir(certs_commands.add_parser("issue-user", help="a person's certificate"))
    user.add_argument("name")
    user.add_argument("--role", required=True, choices=["viewer", "operator", "admin", "auditor"])
    envoy = commands.add_parser("envoy", help="Envoy configuration")
    envoy_commands = envoy.add_subparsers(dest="envoy_command", required=True)
    with_state_dir(
        envoy_commands.add_parser("render", help="write and validate both regions' bootstraps")
    )


def dispatch(ns: argparse.Namespace) -> int:
    """Run the mesh subcommand ``ns.command``; the exit code."""
    from meshctl import down, status, up

    state_dir: Path = ns.state_dir
    if ns.command == "up":
        return up.launch(state_dir)
    if ns.command == "down":
        return down.run(state_dir)
    if ns.command == "status":
        return status.run(state_dir)
    if ns.command == "certs":
        from meshctl.pki import Pki

        paths = Pki(state_dir.resolve() / "pki").issue_user(ns.name, ns.role)
        print(f"certificate: {paths.cert}\nkey:         {paths.key}")
        return 0
    from meshctl.topology import allocate_ports

    mesh = up.Mesh(state_dir)
    if (mesh.state_dir / up.ENDPOINTS_FILE).exists():
        mesh.ports = up.Endpoints.load(mesh.state_dir).ports  # the running mesh's ports
    else:
        mesh.ports = allocate_ports(mesh.topology)
        mesh.issue_certificates()
    for path in mesh.render_configs():
        print(f"{path}: valid (envoy --mode validate)")
    return 0
