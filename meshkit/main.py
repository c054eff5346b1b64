"""``python -m svc_x``: parse the command line, read config, serve until signalled."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from meshkit import logs
from meshkit.config import ConfigError, describe, from_env
from meshkit.server import ServerConfig, Service, serve_until_signalled

C = TypeVar("C", bound=ServerConfig)

ServiceFactory = Callable[[C], contextlib.AbstractAsyncContextManager[list[Service]]]


def run_service(
    name: str,
    config_cls: type[C],
    services: ServiceFactory[C],
    argv: Sequence[str] | None = None,
) -> int:
    """Entry point shared by every service; returns the process exit code."""
    variables = "\n".join(
        f"  {var} (default {default}): {doc}" for var, default, doc in describe(config_cls)
    )
    parser = argparse.ArgumentParser(
        prog=f"python -m svc_{name}",
        description=f"The {name} service of the HVAC control mesh.",
        epilog=f"environment variables:\n{variables}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="TCP port (default $HVAC_PORT or 0: any free port)"
    )
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    ns = parser.parse_args(argv)
    try:
        config = from_env(config_cls, host=ns.host, port=ns.port)
    except ConfigError as exc:
        parser.error(str(exc))
    logs.configure(name, config.log_level)

    def ready(port: int) -> None:
        if ns.port_file is not None:
            tmp = ns.port_file.with_suffix(".tmp")
            tmp.write_text(str(port))
            tmp.replace(ns.port_file)

    async def main() -> None:
        async with services(config) as built:
            await serve_until_signalled(built, config, on_ready=ready)

    asyncio.run(main())
    return 0


@contextlib.asynccontextmanager
async def static_services(*services: Service) -> AsyncIterator[list[Service]]:
    """For services with nothing to open or close."""
    yield list(services)
