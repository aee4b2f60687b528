"""The composition root: assemble components, run them, stop them gracefully.

Every component is an ordinary XMPP client with its own account and connection, so each
can run alone on another machine; ``backchannel run`` hosts any subset in one process.
Resources are opened in one place and closed in reverse order by one
:class:`contextlib.AsyncExitStack`; SIGINT/SIGTERM start a graceful shutdown (stop taking
work, finish or park in-flight work, close connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from backchannel.config import Settings
from backchannel.metrics import Metrics
from pubsub.connection import XmppConnection

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What is running in this process; the status sources for gateway and bot."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    started_at: float = field(default_factory=time.time)
    connections: dict[str, XmppConnection] = field(default_factory=dict)
    worker: Any = None
    gateway: Any = None
    bot: Any = None

    async def status(self) -> dict[str, Any]:
        """The dashboard's /v1/status document."""
        components: dict[str, dict[str, str]] = {}
        for name, conn in self.connections.items():
            components[name] = {
                "state": "running" if conn.ready.is_set() else "degraded",
                "detail": "connected" if conn.ready.is_set() else "reconnecting to XMPP",
            }
        connected = any(c.ready.is_set() for c in self.connections.values())
        components["xmpp"] = {
            "state": "running" if connected else "stopped",
            "detail": f"{self.settings.xmpp.server_kind} at "
                      f"{self.settings.xmpp.host}:{self.settings.xmpp.port}",
        }
        out: dict[str, Any] = {"components": components,
                               "uptime_s": time.time() - self.started_at,
                               "events_total": self.metrics.total("backchannel_events_in_total")}
        if self.worker is not None:
            snap = self.worker.snapshot()
            out.update(deadletters=snap["deadletters"], queue_depth=snap["queue_depth"],
                       in_flight=snap["in_flight"], breakers=snap["breakers"],
                       paused=snap["paused"])
            if snap["paused"]:
                components["worker"]["detail"] += "; paused: " + ", ".join(snap["paused"])
        if self.gateway is not None:
            out["events_total"] = max(out["events_total"],
                                      self.metrics.total("backchannel_ingest_events_total"))
        return out


async def open_connection(runtime: Runtime, stack: contextlib.AsyncExitStack, name: str,
                          resource: str) -> XmppConnection:
    conn = XmppConnection(runtime.settings.xmpp, runtime.settings.account(name),
                          resource=resource)
    await conn.start()
    stack.push_async_callback(conn.close)
    runtime.connections[name] = conn
    return conn


async def start_components(runtime: Runtime, stack: contextlib.AsyncExitStack,
                           components: Iterable[str]) -> None:
    """Start the named components; their shutdown is registered on ``stack``."""
    wanted = list(components)
    settings = runtime.settings
    if "worker" in wanted:
        from workers.worker import Worker

        conn = await open_connection(runtime, stack, "worker", "worker")
        worker = Worker(settings, conn, metrics=runtime.metrics)
        await worker.start()
        stack.push_async_callback(worker.close)
        runtime.worker = worker
    if "gateway" in wanted:
        from gateway.app import Gateway
        from workers.progress import StoreProgress

        conn = await open_connection(runtime, stack, "gateway", "gateway")
        # The worker's store, read-only, when it is on this machine ("in progress").
        progress = StoreProgress(settings.worker.store)
        stack.callback(progress.close)
        gateway = Gateway(settings, conn, metrics=runtime.metrics,
                          status_provider=runtime.status, progress=progress)
        await gateway.start()
        stack.push_async_callback(gateway.close)
        runtime.gateway = gateway
        log.info("gateway listening on %s", gateway.url)
    if "bot" in wanted:
        from bot.component import start_bot

        runtime.bot = await start_bot(runtime, stack)


async def serve(settings: Settings, components: Iterable[str],
                stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runtime = Runtime(settings)
    async with contextlib.AsyncExitStack() as stack:
        await start_components(runtime, stack, components)
        print(f"backchannel running: {', '.join(components)} (Ctrl-C to stop)", flush=True)
        await stop.wait()
        log.info("shutting down")
    log.info("stopped cleanly")


def run_components(settings: Settings, components: list[str]) -> int:
    asyncio.run(serve(settings, components))
    return 0
