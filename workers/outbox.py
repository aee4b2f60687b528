"""The outbox: results, feed items and dead letters on their way to the XMPP server.

Why an outbox: the worker decides what to publish in the same store transaction that
records an event as finished, then publishes from here. A crash or a server restart in
between loses nothing; publishing again is harmless because item ids are deterministic
(the original event id), so the server replaces rather than duplicates. Up to
``window`` publishes are in flight at once: throughput is bound by the server, not by
round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from xml.etree import ElementTree as ET

from backchannel.errors import NotConnected, XmppError, XmppRefused
from backchannel.metrics import Metrics
from pubsub.client import PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import JSON_NS
from workers.feeding import wait_woken
from workers.store import Store

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, conn: XmppConnection, pubsub: PubSub, store: Store, metrics: Metrics,
                 window: int = 32) -> None:
        self.conn = conn
        self.pubsub = pubsub
        self.store = store
        self.metrics = metrics
        self.window = window
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        # Published but not yet deleted from the store: deleted in one transaction per
        # round, not one per item. After a crash they are published again, harmlessly
        # (same item ids).
        self._done: list[int] = []
        self.published = 0
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._retry_at = 0.0

    def start(self) -> None:
        self._loop = asyncio.create_task(self._feed(), name="outbox")

    def wake(self) -> None:
        self._wake.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (True) or ``timeout`` passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.store.outbox_size() - len(self._done) > 0 or self.in_flight:
            if loop.time() > deadline:
                return False
            self.wake()
            await asyncio.sleep(0.02)
        return True

    async def close(self, grace: float = 5.0) -> None:
        await self.flush(grace) if self.conn.ready.is_set() else None
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for task in list(self.in_flight.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._forget_done()

    async def _feed(self) -> None:
        while True:
            self._wake.clear()
            timeout: float | None = None
            if not self.conn.ready.is_set():
                await self.conn.ready.wait()
                continue
            self._forget_done()
            loop = asyncio.get_running_loop()
            if loop.time() < self._retry_at:
                timeout = self._retry_at - loop.time()
            else:
                free = self.window - len(self.in_flight)
                if free > 0:
                    after = max(self.in_flight) if self.in_flight else 0
                    for seq, node, item_id, doc in self.store.outbox(free, after):
                        if seq in self.in_flight:
                            continue
                        self.in_flight[seq] = asyncio.create_task(
                            self._publish(seq, node, item_id, doc))
            await wait_woken(self._wake, timeout)

    def _forget_done(self) -> None:
        if self._done:
            done, self._done = self._done, []
            self.store.outbox_done(done)

    async def _publish(self, seq: int, node: str, item_id: str, doc: str) -> None:
        try:
            payload = _payload(doc)
            try:
                await self.pubsub.publish(node, item_id, payload)
            except XmppRefused as exc:
                log.error("server refused publishing %s to %s (%s); retrying in 5 s - check "
                          "the node's publisher affiliations (`backchannel nodes bootstrap`)",
                          item_id, node, exc)
                self._retry_at = asyncio.get_running_loop().time() + 5
                return
            except (NotConnected, XmppError) as exc:
                log.info("publish of %s to %s postponed: %s", item_id, node, exc)
                self._retry_at = asyncio.get_running_loop().time() + 0.5
                return
            self._done.append(seq)
            self.published += 1
            self.metrics.inc("backchannel_published_total", {"node": node})
        finally:
            self.in_flight.pop(seq, None)
            self._wake.set()


def _payload(doc: str) -> ET.Element:
    element = ET.Element(f"{{{JSON_NS}}}json")
    element.text = doc
    return element


def encode(event_doc: dict[str, object]) -> str:
    return json.dumps(event_doc, ensure_ascii=False, separators=(",", ":"))
