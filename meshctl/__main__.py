"""``meshctl``: the operator CLI of the HVAC control mesh."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from meshctl import demo, mesh_cli, protogen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meshctl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="start every service locally and show them")
    run_demo.add_argument(
        "--seconds", type=float, help="stop after this long (default: run until Ctrl-C)"
    )
    commands.add_parser("gen", help="regenerate gen/ from protos/ (same as `make gen`)")
    mesh_cli.add_commands(commands)
    ns = parser.parse_args(argv)
    if ns.command in mesh_cli.COMMANDS:
        return mesh_cli.dispatch(ns)
    if ns.command == "demo":
        return demo.run(ns.seconds)
    if ns.command == "gen":
        return protogen.main([])
    parser.error(f"unknown command {ns.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
