"""A whole pipeline on loopback for tests: nodes of its own, fake services, a demo site.

Each :class:`Pipeline` gets fresh node names, so tests never see each other's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backchannel import config
from backchannel.localserver import ServerState
from pubsub.client import PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import Event, make_event
from pubsub.nodes import bootstrap
from pubsub.publisher import Publisher
from simulator.demosite import DemoSite
from simulator.services import FakeServices
from simulator.stack import SITE_SOURCE, WEBHOOK_SECRET, StackOptions, stack_toml
from workers.worker import Worker

_counter = itertools.count()


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


class Pipeline:
    def __init__(self, state: ServerState, var: Path, *, protocol: str = "xmlrpc",
                 geocoder: str = "nominatim", max_attempts: int = 5, extra: str = "") -> None:
        self.state = state
        self.var = var
        self.protocol = protocol
        self.geocoder = geocoder
        self.max_attempts = max_attempts
        self.extra = extra
        self.services = FakeServices(seed=7)
        self.site = DemoSite(secret=WEBHOOK_SECRET, seed=7)
        self.stack = contextlib.AsyncExitStack()
        self.settings: config.Settings
        self.config_file: Path

    async def __aenter__(self) -> Pipeline:
        await self.stack.__aenter__()
        await self.stack.enter_async_context(self.services)
        await self.stack.enter_async_context(self.site)
        prefix = f"t{next(_counter)}x{int(time.time() * 1000) % 100000}"
        text = stack_toml(self.state, StackOptions(
            var_dir=str(self.var), services_url=self.services.url, site_url=self.site.url,
            callback_protocol=self.protocol, node_prefix=prefix, geocoder=self.geocoder,
            max_attempts=self.max_attempts, extra=self.extra))
        self.config_file = self.var / "backchannel.toml"
        self.config_file.write_text(text)
        self.settings = config.load(self.config_file)
        async with XmppConnection(self.settings.xmpp, self.settings.account("admin"),
                                  resource="boot") as admin:
            reports = await bootstrap(PubSub(admin, self.settings.xmpp.pubsub_service),
                                      self.settings)
        assert all(r.action != "failed" for r in reports), [r.lines() for r in reports]
        self.site_conn = XmppConnection(self.settings.xmpp, self.settings.account("site"),
                                        resource="site")
        await self.site_conn.start()
        self.stack.push_async_callback(self.site_conn.close)
        self.publisher = Publisher(PubSub(self.site_conn, self.settings.xmpp.pubsub_service))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stack.__aexit__(*exc)

    async def publish_many(self, events: list[Event], window: int = 32) -> None:
        sem = asyncio.Semaphore(window)

        async def one(event: Event) -> None:
            async with sem:
                await self.publisher.publish(self.settings.nodes.events, event)

        await asyncio.gather(*(one(e) for e in events))

    @staticmethod
    def registrations(n: int, addresses: list[str] | None = None,
                      prefix: str = "u") -> list[Event]:
        addresses = addresses or ["Paris, France"]
        return [
            make_event("user.registered", SITE_SOURCE, {
                "user_id": f"{prefix}{i}", "name": f"User {i}",
                "email": f"{prefix}{i}@example.com",
                "address": addresses[i % len(addresses)],
            })
            for i in range(n)
        ]


async def start_worker(p: Pipeline, settings: config.Settings | None = None
                       ) -> tuple[XmppConnection, Worker]:
    """An in-process worker on ``p`` (``settings`` to run it with changed settings)."""
    settings = settings or p.settings
    conn = XmppConnection(settings.xmpp, settings.account("worker"), resource="worker")
    worker = Worker(settings, conn, store_path=str(p.var / "worker.sqlite"))
    await worker.start()
    await conn.start()
    return conn, worker


async def stop_worker(conn: XmppConnection, worker: Worker) -> None:
    await worker.close()
    await conn.close()
