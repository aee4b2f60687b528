"""Consuming a node: each event handed to the handler exactly once, across drops and restarts.

Two paths bring items in, and both feed one queue drained by one task:

- live notifications (we subscribe our bare JID and send presence);
- catch-up: on start and after every (re)established session we read back the node's
  retained items, newest window first, widening until we meet an item we have already
  handed over. If none of them is known although we have a checkpoint, the node no longer
  holds everything since then: we warn (a possible gap) instead of pretending.

The drain task asks the durable :class:`~pubsub.seen.SeenStore` before handing an item
over and marks it right after the handler returns, with no ``await`` in between, so a
restart never hands a finished item over again. Handlers must be idempotent for the one
case that remains (a crash while the handler itself runs), which the worker is: its inbox
insert is keyed by event id.

Items that break the contract never reach the handler; they go to ``on_invalid`` (the
worker turns them into dead letters) and are marked, so they are reported once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from backchannel.errors import EventError, NotConnected, StoreError, XmppError
from pubsub.client import NS_EVENT, Item, PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import DEFAULT_MAX_BYTES, Event, from_element
from pubsub.seen import SeenStore

log = logging.getLogger(__name__)

Handler = Callable[[Event], Awaitable[None]]
InvalidHandler = Callable[[str, str, EventError], Awaitable[None]]  # item id, raw text, error

FIRST_WINDOW = 100


@dataclass
class ConsumerStats:
    handed: int = 0
    duplicates: int = 0
    invalid: int = 0
    handler_errors: int = 0
    catchups: int = 0
    caught_up: int = 0
    gaps: int = 0


class Consumer:
    def __init__(
        self,
        conn: XmppConnection,
        pubsub: PubSub,
        node: str,
        store: SeenStore,
        handler: Handler,
        *,
        on_invalid: InvalidHandler | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_window: int = 100_000,
        subscribe_full_jid: bool = False,
        known_sources: Callable[[str], bool] | None = None,
    ) -> None:
        self.conn = conn
        self.pubsub = pubsub
        self.node = node
        self.store = store
        self.handler = handler
        self.on_invalid = on_invalid
        self.max_bytes = max_bytes
        self.max_window = max_window
        self.subscribe_full_jid = subscribe_full_jid
        self.known_sources = known_sources
        self.stats = ConsumerStats()
        self.gap_warnings: list[str] = []
        self.caught_up = asyncio.Event()
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._drain: asyncio.Task[None] | None = None
        self._started = False
        self._full_next = False  # set while a catch-up has not completed

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start draining and hook into the connection (it may or may not be up yet)."""
        if self._started:
            return
        self._started = True
        self.conn.on_message(
            f"{{jabber:client}}message/{{{NS_EVENT}}}event/{{{NS_EVENT}}}items",
            self._on_notification,
            name=f"consumer:{self.node}",
        )
        self.conn.on_ready(self._on_session)
        self._drain = asyncio.create_task(self._drain_loop(), name=f"consume:{self.node}")
        if self.conn.ready.is_set():
            await self._on_session(False)

    async def close(self) -> None:
        self.conn.remove_message_handler(f"consumer:{self.node}")
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
            self._drain = None

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def idle(self) -> None:
        """Wait until every queued item has been handled (tests, shutdown)."""
        await self._queue.join()

    # ------------------------------------------------------------------ inputs
    def _on_notification(self, message: ET.Element) -> None:
        service = message.get("from", "")
        if service.split("/", 1)[0] != self.pubsub.service:
            return
        items = message.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items")
        if items is None or items.get("node") != self.node:
            return
        for element in items.findall(f"{{{NS_EVENT}}}item"):
            children = list(element)
            self._queue.put_nowait(
                Item(id=element.get("id", ""), payload=children[0] if children else None)
            )

    async def _on_session(self, resumed: bool) -> None:
        """Subscribe and catch up; retried while this session lasts, because a session
        whose catch-up failed would otherwise wait for the next reconnect."""
        jid = self.conn.jid if self.subscribe_full_jid else self.conn.bare_jid
        for attempt in range(6):
            try:
                if not resumed:
                    await self.pubsub.subscribe(self.node, jid)
                await self.catch_up()
                return
            except NotConnected:
                return  # the next session runs this again
            except XmppError as exc:
                log.warning("catch-up on %s failed (%s); retrying", self.node, exc)
                await asyncio.sleep(0.25 * 2**attempt)
        log.error("catch-up on %s kept failing; it runs again at the next reconnect",
                  self.node)

    async def catch_up(self) -> int:
        """Queue retained items we have not handed over; returns how many were queued."""
        self.stats.catchups += 1
        # After a failed catch-up, read everything: a window could stop at items that
        # arrived live since, above older ones nobody has taken in yet.
        window = self.max_window if self._full_next else FIRST_WINDOW
        self._full_next = True
        while True:
            items = await self.pubsub.items(self.node, max_items=window)
            known = [i for i in items if i.id and self.store.seen(self.node, i.id)]
            # Widen until the oldest item of the window is one we have: everything the
            # window holds after it is then in view.
            oldest_known = bool(items) and bool(items[0].id) and \
                self.store.seen(self.node, items[0].id)
            if oldest_known or len(items) < window or window >= self.max_window:
                break
            window = min(window * 4, self.max_window)
        checkpoint = self.store.checkpoint(self.node)
        if checkpoint is not None and items and not known:
            message = (
                f"node {self.node} no longer holds the items after our checkpoint "
                f"{checkpoint!r}: events published while we were away may be missing "
                f"(node returned {len(items)} items, none seen before)"
            )
            log.warning("possible gap: %s", message)
            self.stats.gaps += 1
            self.gap_warnings.append(message)
        fresh = [i for i in items if not (i.id and self.store.seen(self.node, i.id))]
        for item in fresh:
            self._queue.put_nowait(item)
        self.stats.caught_up += len(fresh)
        self._full_next = False
        if fresh:
            log.info("catch-up on %s: %d retained items not seen before", self.node, len(fresh))
        self.caught_up.set()
        return len(fresh)

    # ------------------------------------------------------------------ draining
    async def _drain_loop(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._handle(item)
            except asyncio.CancelledError:
                raise
            except (StoreError, XmppError, NotConnected) as exc:
                # Not marked: the next catch-up brings it back.
                self.stats.handler_errors += 1
                log.error("item %s on %s not handled (%s); it will be retried at the next "
                          "catch-up", item.id, self.node, exc)
            except Exception:
                self.stats.handler_errors += 1
                log.exception("handler failed on item %s of %s; it will be retried at the "
                              "next catch-up", item.id, self.node)
            finally:
                self._queue.task_done()

    async def _handle(self, item: Item) -> None:
        if item.id and self.store.seen(self.node, item.id):
            self.stats.duplicates += 1
            return
        try:
            event = from_element(item.payload, item_id=item.id or None, max_bytes=self.max_bytes,
                                 known_sources=self.known_sources)
        except EventError as exc:
            self.stats.invalid += 1
            raw = (item.payload.text or "") if item.payload is not None else ""
            log.warning("invalid item %r on %s: %s", item.id[:80], self.node, exc)
            if self.on_invalid is not None:
                await self.on_invalid(item.id, raw[:4096], exc)
            if item.id:
                self.store.mark(self.node, item.id)
            return
        await self.handler(event)
        self.store.mark(self.node, item.id or event.id)
        self.stats.handed += 1
