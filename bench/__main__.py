"""``python -m bench``: run every benchmark in turn."""

from __future__ import annotations

from bench import audit, control, control_sessions, mesh, serve, solver


def main() -> int:
    failures = 0
    for module in (serve, control_sessions, mesh, audit, solver, control):
        failures += module.main()
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
