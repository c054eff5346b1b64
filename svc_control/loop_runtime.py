"""Starting and stopping the control loop inside the service, from its configuration.

`running_loop` opens what the loop needs — the clock (real, or accelerated simulated time), the
optimizer channel, the audit outbox and its relay — starts the loop, hooks it to override
changes, and closes everything in reverse order when the service stops. With the loop turned
off (`HVAC_CONTROL_LOOP=off`) it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from meshkit.outbox import Outbox, audit_sender
from svc_control.clock import AcceleratedClock, Clock, WallClock
from svc_control.config import ControlConfig
from svc_control.loop import ControlLoop, LoopSettings, stop
from svc_control.optimizer_client import OPTIMIZER_AUTHORITY, OptimizerClient

if TYPE_CHECKING:  # the servicer starts the loop: a runtime import would be circular
    from svc_control.service import ControlServicer

log = logging.getLogger("svc_control.loop")

AUDIT_AUTHORITY = "audit.hvac.local"


def control_actor(region: str) -> str:
    """The SPIFFE ID this instance writes as the actor of its audit events."""
    return f"spiffe://hvac.local/region/{region}/svc/control"


def _target(address: str, egress: str, authority: str) -> tuple[str, str | None] | None:
    """Where to dial: the explicit address, else the mesh egress with the service's authority."""
    if address:
        return address, None
    if egress:
        return egress, authority
    return None


def clock_of(config: ControlConfig) -> Clock:
    """The wall clock, or simulated time from now running `time_acceleration` times faster."""
    if config.time_acceleration == 1.0:
        return WallClock()
    return AcceleratedClock(time.time(), config.time_acceleration)


@contextlib.asynccontextmanager
async def running_loop(
    config: ControlConfig, servicer: ControlServicer, clock: Clock | None = None
) -> AsyncIterator[ControlLoop | None]:
    """The loop of this instance, running for as long as the context is open."""
    if not config.control_loop:
        yield None
        return
    optimizer_at = _target(config.optimizer_address, config.mesh_egress, OPTIMIZER_AUTHORITY)
    audit_at = _target(config.audit_address, config.mesh_egress, AUDIT_AUTHORITY)
    optimizer = (
        OptimizerClient.open(optimizer_at[0], config.solve_deadline_s, authority=optimizer_at[1])
        if optimizer_at is not None
        else None
    )
    audit_channel: grpc.aio.Channel | None = None
    outbox: Outbox | None = None
    relay: asyncio.Task[None] | None = None
    if audit_at is not None:
        address, authority = audit_at
        options = [("grpc.default_authority", authority)] if authority else []
        audit_channel = grpc.aio.insecure_channel(address, options)
        # One relay per spool folder: instances of both regions may share a working directory.
        outbox = Outbox(config.outbox_dir / config.region, audit_sender(audit_channel))
        relay = asyncio.create_task(outbox.run())
    else:
        log.warning("no audit address and no mesh egress: decisions are logged, not audited")
    if optimizer is None:
        log.warning("no optimizer address and no mesh egress: the fallback thermostat controls")
    loop = ControlLoop(
        servicer.store,
        servicer.hub,
        servicer.publish_plan,
        clock or clock_of(config),
        LoopSettings(
            region=config.region,
            actor=control_actor(config.region),
            horizon_steps=config.horizon_steps,
            control_interval_s=config.control_interval_s or None,
        ),
        optimizer,
        outbox,
    )
    servicer.on_overrides_changed = loop.on_overrides_changed
    task = asyncio.create_task(loop.run())
    try:
        yield loop
    finally:
        servicer.on_overrides_changed = None
        await stop(task)
        await stop(relay)
        if optimizer is not None:
            await optimizer.close()
        if audit_channel is not None:
            await audit_channel.close()
