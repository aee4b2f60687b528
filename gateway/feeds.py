"""``GET /v1/feeds/{feed}``: feed nodes as Server-Sent Events, for any browser on a wall.

Why a hub: the gateway subscribes its one XMPP session to each feed node once, and
:class:`FeedHub` fans every notification out to per-client bounded queues. XMPP traffic
does not grow with the number of displays, and a client that cannot keep up is dropped
(its browser reconnects and resumes) instead of slowing the others down.

Resume misses nothing: a client is registered with the hub *before* the retained items
are read from the node, so an item published meanwhile is either in the replay or in
the queue (or both: replayed ids are skipped when they come through the queue). With
``Last-Event-ID`` the replay is every retained item after that id, oldest first; without
it, the newest :data:`INITIAL_ITEMS`. After an XMPP reconnect the hub itself reads back
what was published while it was away and pushes it to the connected clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from aiohttp import web

from backchannel.config import NodeNames
from backchannel.errors import EventError, XmppError
from backchannel.metrics import Metrics
from gateway.auth import Authenticator
from gateway.problems import Problem
from pubsub.client import NS_EVENT, Item, PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import from_element

log = logging.getLogger(__name__)

INITIAL_ITEMS = 20
QUEUE_SIZE = 256
HEARTBEAT = 15.0
FIRST_WINDOW = 100
MAX_WINDOW = 100_000
HANDLER_NAME = "gateway-feeds"

CLIENTS = "backchannel_sse_clients"
DROPPED = "backchannel_sse_dropped_total"
SENT = "backchannel_sse_messages_total"


@dataclass(frozen=True)
class Message:
    """One SSE message, formatted once and shared by every client."""

    id: str
    text: bytes


@dataclass(eq=False)
class Client:
    """One connected SSE client: its bounded queue and whether the hub gave up on it."""

    feed: str
    queue: asyncio.Queue[Message] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: asyncio.Event = field(default_factory=asyncio.Event)


def format_message(item_id: str, event_json: str) -> bytes:
    return f"id: {item_id}\nevent: feed\ndata: {event_json}\n\n".encode()


def to_message(item: Item, max_bytes: int) -> Message | None:
    """The SSE message for a feed item, or None (logged) when it breaks the contract."""
    try:
        event = from_element(item.payload, item_id=item.id or None, max_bytes=max_bytes)
    except EventError as exc:
        log.warning("feed item %r skipped: %s", item.id[:80], exc)
        return None
    # to_json is compact JSON: no newline can end the SSE data line early.
    return Message(item.id or event.id, format_message(item.id or event.id, event.to_json()))


class FeedHub:
    """The single subscriber of the feed nodes inside the gateway."""

    def __init__(self, conn: XmppConnection, pubsub: PubSub, nodes: NodeNames,
                 metrics: Metrics, *, max_bytes: int) -> None:
        self.conn = conn
        self.pubsub = pubsub
        self.nodes = nodes
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.feeds = {nodes.feed(name): name for name in nodes.feeds}
        self.clients: dict[str, set[Client]] = {name: set() for name in nodes.feeds}
        self.last_seen: dict[str, str] = {}  # feed -> id of the newest item pushed
        self.subscribed = asyncio.Event()
        self._sessions = 0
        self._closed = False
        metrics.describe(CLIENTS, "gauge", "Connected Server-Sent Events clients per feed")
        metrics.describe(DROPPED, "counter", "SSE clients dropped because they fell behind")
        metrics.describe(SENT, "counter", "SSE feed messages written to clients")

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.conn.on_message(
            f"{{jabber:client}}message/{{{NS_EVENT}}}event/{{{NS_EVENT}}}items",
            self._on_notification, name=HANDLER_NAME,
        )
        self.conn.on_ready(self._on_session)
        if self.conn.ready.is_set():
            await self._on_session(False)

    def close(self) -> None:
        """Stop fanning out and let every client's stream end."""
        self._closed = True
        self.conn.remove_message_handler(HANDLER_NAME)
        for clients in self.clients.values():
            for client in clients:
                client.dropped.set()

    def add(self, feed: str) -> Client:
        client = Client(feed)
        self.clients[feed].add(client)
        self.metrics.set(CLIENTS, len(self.clients[feed]), {"feed": feed})
        return client

    def remove(self, client: Client) -> None:
        self.clients[client.feed].discard(client)
        self.metrics.set(CLIENTS, len(self.clients[client.feed]), {"feed": client.feed})

    # ------------------------------------------------------------------ XMPP side
    async def _on_session(self, resumed: bool) -> None:
        if self._closed:
            return
        self._sessions += 1
        first = self._sessions == 1
        if not resumed:
            for node in self.feeds:
                try:
                    await self.pubsub.subscribe(node, self.conn.bare_jid)
                except XmppError as exc:
                    log.warning("cannot subscribe to feed node %s: %s", node, exc)
        self.subscribed.set()
        if not first and not resumed:
            for node, feed in self.feeds.items():
                await self._catch_up(node, feed)

    async def _catch_up(self, node: str, feed: str) -> None:
        """Push what was published while the session was down (a new session lost it)."""
        last = self.last_seen.get(feed)
        if last is None or not self.clients[feed]:
            return
        items, found = await read_after(self.pubsub, node, last)
        if not found:
            log.warning("feed %s: item %s no longer retained; SSE clients may miss items "
                        "published during the XMPP outage", feed, last)
            return
        for item in items:
            message = to_message(item, self.max_bytes)
            if message is not None:
                self._push(feed, message)

    def _on_notification(self, stanza: ET.Element) -> None:
        if self._closed:
            return
        if stanza.get("from", "").split("/", 1)[0] != self.pubsub.service:
            return
        items = stanza.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items")
        if items is None:
            return
        feed = self.feeds.get(items.get("node", ""))
        if feed is None:
            return
        for element in items.findall(f"{{{NS_EVENT}}}item"):
            children = list(element)
            item = Item(id=element.get("id", ""), payload=children[0] if children else None)
            message = to_message(item, self.max_bytes)
            if message is not None:
                self._push(feed, message)

    def _push(self, feed: str, message: Message) -> None:
        self.last_seen[feed] = message.id
        for client in list(self.clients[feed]):
            if client.dropped.is_set():
                continue
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                client.dropped.set()
                self.metrics.inc(DROPPED, {"feed": feed})
                log.info("SSE client of feed %s fell %d messages behind; dropped", feed,
                         QUEUE_SIZE)


async def read_after(pubsub: PubSub, node: str, last_id: str) -> tuple[list[Item], bool]:
    """Retained items after ``last_id``, oldest first, and whether ``last_id`` was found.

    Reads a widening window of the newest items until it holds ``last_id`` or the node
    has nothing older.
    """
    window = FIRST_WINDOW
    while True:
        items = await pubsub.items(node, max_items=window)
        for index, item in enumerate(items):
            if item.id == last_id:
                return items[index + 1:], True
        if len(items) < window or window >= MAX_WINDOW:
            return items, False
        window = min(window * 4, MAX_WINDOW)


class FeedStream:
    """The SSE handler: replay, then live messages, with heartbeats.

    ``auth``: when feeds are whitelisted on the XMPP server (``nodes.feed_access``), only
    a registered site may read them here (the same credentials as for ingest). Why: the
    gateway is itself on the whitelist, so without this check it would hand every
    whitelisted feed to any HTTP client and the whitelist would protect nothing.
    """

    def __init__(self, hub: FeedHub, *, heartbeat: float = HEARTBEAT,
                 auth: Authenticator | None = None) -> None:
        self.hub = hub
        self.heartbeat = heartbeat
        self.auth = auth

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.auth is not None:
            self.auth.authenticate(request.headers, await request.read())
        feed = request.match_info["feed"]
        if feed not in self.hub.clients:
            raise Problem(404, "unknown-feed", f"no feed named {feed[:60]!r}",
                          extra={"feeds": sorted(self.hub.clients)})
        last_id = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
        client = self.hub.add(feed)
        try:
            replay, note = await self._replay(feed, last_id)
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            })
            await response.prepare(request)
            await self._stream(response, client, replay, note)
            return response
        finally:
            self.hub.remove(client)

    async def _replay(self, feed: str, last_id: str | None) -> tuple[list[Message], str]:
        node = self.hub.nodes.feed(feed)
        try:
            if last_id:
                items, found = await read_after(self.hub.pubsub, node, last_id)
                note = "" if found else (
                    f": last event id {last_id[:128]!r} is not retained; "
                    f"sending the newest {INITIAL_ITEMS} items\n\n")
                if not found:
                    items = items[-INITIAL_ITEMS:]
            else:
                items, note = await self.hub.pubsub.items(node, max_items=INITIAL_ITEMS), ""
        except XmppError as exc:
            raise Problem(503, "xmpp-unavailable",
                          f"cannot read feed {feed!r} from the XMPP server right now; retry",
                          headers={"Retry-After": "5"}) from exc
        messages = [m for m in (to_message(i, self.hub.max_bytes) for i in items)
                    if m is not None]
        return messages, note

    async def _stream(self, response: web.StreamResponse, client: Client,
                      replay: Iterable[Message], note: str) -> None:
        sent_ids: set[str] = set()
        try:
            await response.write(f"retry: 3000\n{note}\n".encode())
            for message in replay:
                await response.write(message.text)
                sent_ids.add(message.id)
            self.hub.metrics.inc(SENT, {"feed": client.feed}, float(len(sent_ids)))
            while not client.dropped.is_set():
                live = await self._next(client)
                if live is None:
                    await response.write(b": ping\n\n")
                    continue
                if live.id in sent_ids:
                    sent_ids.discard(live.id)  # came in the replay already
                    continue
                await response.write(live.text)
                self.hub.metrics.inc(SENT, {"feed": client.feed})
        except ConnectionError:
            # The browser went away: nothing left to answer.
            log.debug("SSE client of feed %s disconnected", client.feed)

    async def _next(self, client: Client) -> Message | None:
        """The next queued message, or None when a heartbeat is due or the client dropped."""
        if not client.queue.empty():
            return client.queue.get_nowait()
        getter = asyncio.ensure_future(client.queue.get())
        dropped = asyncio.ensure_future(client.dropped.wait())
        try:
            done, _ = await asyncio.wait({getter, dropped}, timeout=self.heartbeat,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (getter, dropped):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if getter in done:
            return getter.result()
        return None
