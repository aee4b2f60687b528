"""Fake web sites publishing realistic events, over XMPP and/or the HTTP gateway.

A site emits a mix of registrations, profile changes and logins for fake people living
in real cities (GeoNames data), at a steady or bursty rate. Over XMPP it publishes to the
events node as the ``site`` account; over HTTP it signs each POST the way a PHP or
Drupal site would (:func:`gateway.auth.signed_headers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from backchannel.config import Settings
from backchannel.errors import BackchannelError
from pubsub.client import PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import Event, make_event
from pubsub.publisher import Publisher
from simulator.people import fake_event_data, fake_user

log = logging.getLogger(__name__)

KINDS = (("user.registered", 0.6), ("user.profile_changed", 0.25), ("user.logged_in", 0.15))


@dataclass
class SimStats:
    sent: int = 0
    failed: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SiteIdentity:
    """A registered site the simulator acts as: name, ``source`` and ingest secret."""

    name: str
    source: str
    secret: str


@dataclass(frozen=True)
class SimPlan:
    rate: float = 2.0  # events per second, all sites together
    duration: float = 0.0  # seconds; 0 = until stopped or ``count`` reached
    count: int = 0  # events; 0 = unlimited
    transport: str = "both"  # xmpp | http | both
    bursty: bool = False  # bursts of 10x the rate for 2 s every 15 s
    kinds: tuple[tuple[str, float], ...] = KINDS
    seed: int = 1


class Simulator:
    """Publishes events as planned; ``stats`` counts what was accepted."""

    def __init__(self, settings: Settings, plan: SimPlan, sites: list[SiteIdentity], *,
                 gateway_url: str | None = None) -> None:
        if not sites:
            raise ValueError("the simulator needs at least one site to act as")
        self.settings = settings
        self.plan = plan
        self.sites = sites
        self.gateway_url = gateway_url
        self.rng = random.Random(plan.seed)  # noqa: S311 - simulation, not crypto
        self.stats = SimStats()
        self.users: list[dict[str, object]] = []

    def next_event(self) -> Event:
        r = self.rng.random()
        kind = self.plan.kinds[-1][0]
        acc = 0.0
        for name, weight in self.plan.kinds:
            acc += weight
            if r < acc:
                kind = name
                break
        if kind != "user.registered" and self.users:
            user = self.rng.choice(self.users)
        else:
            kind = "user.registered"
            user = fake_user(self.rng)
            self.users.append(user)
            if len(self.users) > 5000:
                self.users.pop(0)
        data = fake_event_data(kind, self.rng, user)
        site = self.sites[int(str(user["user_id"])) % len(self.sites)]
        return make_event(kind, site.source, data)

    def _interval(self, elapsed: float) -> float:
        rate = self.plan.rate
        if self.plan.bursty and elapsed % 15.0 < 2.0:
            rate *= 10
        return 1.0 / rate if rate > 0 else 0.0

    async def run(self, stop: asyncio.Event | None = None,
                  progress: Callable[[SimStats], None] | None = None) -> SimStats:
        stop = stop or asyncio.Event()
        use_xmpp = self.plan.transport in ("xmpp", "both")
        use_http = self.plan.transport in ("http", "both") and self.gateway_url
        conn: XmppConnection | None = None
        publisher: Publisher | None = None
        if use_xmpp:
            conn = XmppConnection(self.settings.xmpp, self.settings.account("site"),
                                  resource="simulator")
            await conn.start()
            publisher = Publisher(PubSub(conn, self.settings.xmpp.pubsub_service),
                                  max_bytes=self.settings.max_event_bytes)
        http = aiohttp.ClientSession() if use_http else None
        pending: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        next_at = started
        try:
            while not stop.is_set():
                elapsed = time.monotonic() - started
                if self.plan.duration and elapsed >= self.plan.duration:
                    break
                if self.plan.count and self.stats.sent + self.stats.failed + len(pending) \
                        >= self.plan.count:
                    break
                event = self.next_event()
                via_http = bool(use_http) and (not use_xmpp or self.rng.random() < 0.5)
                task = asyncio.create_task(
                    self._send_http(http, event) if via_http and http is not None
                    else self._send_xmpp(publisher, event))
                pending.add(task)
                task.add_done_callback(pending.discard)
                if progress is not None and (self.stats.sent % 10 == 0):
                    progress(self.stats)
                next_at += self._interval(elapsed)
                delay = next_at - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                elif len(pending) > 64:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if pending:
                await asyncio.wait(pending, timeout=30)
        finally:
            for task in pending:
                task.cancel()
            if http is not None:
                await http.close()
            if conn is not None:
                await conn.close()
        return self.stats

    def _count(self, event: Event) -> None:
        self.stats.sent += 1
        self.stats.by_type[event.type] = self.stats.by_type.get(event.type, 0) + 1
        self.stats.ids.append(event.id)

    async def _send_xmpp(self, publisher: Publisher | None, event: Event) -> None:
        assert publisher is not None
        try:
            await publisher.publish(self.settings.nodes.events, event, wait_connected=10)
            self._count(event)
        except BackchannelError as exc:
            self.stats.failed += 1
            log.warning("simulated site: publish failed: %s", exc)

    async def _send_http(self, http: aiohttp.ClientSession, event: Event) -> None:
        from gateway.auth import signed_headers

        site = next(s for s in self.sites if s.source == event.source)
        body = json.dumps(event.to_dict()).encode()
        headers = {"Content-Type": "application/json",
                   **signed_headers(site.name, site.secret, body)}
        try:
            async with http.post(f"{self.gateway_url}/v1/events", data=body,
                                 headers=headers) as resp:
                if resp.status == 202:
                    self._count(event)
                    return
                detail = (await resp.text())[:200]
                self.stats.failed += 1
                log.warning("simulated site: gateway answered %d: %s", resp.status, detail)
        except aiohttp.ClientError as exc:
            self.stats.failed += 1
            log.warning("simulated site: gateway unreachable: %s", exc)
