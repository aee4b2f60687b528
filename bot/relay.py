"""Live feeds relayed into chats and rooms, batched so a burst never floods anyone.

Why batching per target: a feed can carry hundreds of items a second; a chat cannot.
Each target (a bare JID or a room) gets at most one message per ``relay_interval``
seconds, summarising what arrived meanwhile ("12 new signups: Amy (Paris, FR), ... and 9
more"). The first item after a quiet period goes out at once.

How items arrive: the bot subscribes its own bare JID to each relayed feed node and
receives the server's notifications on its connection. Subscriptions live in the bot's
SQLite state, so relays survive restarts; after every (re)established session the bot
subscribes again (idempotent) and flushes what waited for the connection. Missed items
are not caught up (a relay is a live view), and item ids are remembered for a while so a
notification delivered twice is relayed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from backchannel.config import Settings
from backchannel.errors import BackchannelError, NotConnected, XmppError
from bot.state import BotState
from commands.render import ELLIPSIS, code, one_line, plural, shorten
from pubsub.client import NS_EVENT, PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import from_element

log = logging.getLogger(__name__)

SHOWN = 3  # items named in a summary
REMEMBERED = 10_000  # item ids remembered per feed against duplicates
NOTIFICATION_XPATH = f"{{jabber:client}}message/{{{NS_EVENT}}}event/{{{NS_EVENT}}}items"


@dataclass
class _Pending:
    """What waits for the next message to one target, per feed."""

    counts: dict[str, int] = field(default_factory=dict)
    shown: dict[str, list[str]] = field(default_factory=dict)

    def add(self, feed: str, line: str) -> None:
        self.counts[feed] = self.counts.get(feed, 0) + 1
        lines = self.shown.setdefault(feed, [])
        if len(lines) < SHOWN:
            lines.append(line)

    def __bool__(self) -> bool:
        return bool(self.counts)


def item_line(feed: str, payload: ET.Element | None) -> str:
    """One short line for a feed item: ``Amy (Paris, FR)`` or the activity line."""
    try:
        event = from_element(payload)
    except BackchannelError:
        return "(unreadable item)"
    data = event.data if isinstance(event.data, dict) else {}
    if isinstance(data.get("line"), str):
        return shorten(one_line(data["line"]), 160)
    if "name" in data:
        place = ", ".join(str(data[k]) for k in ("city", "country_code") if data.get(k))
        name = shorten(one_line(str(data["name"])), 60)
        return f"{name} ({shorten(one_line(place), 60)})" if place else name
    return shorten(one_line(event.type), 80)


def summary(feed: str, count: int, shown: Sequence[str]) -> str:
    """One relay message for ``count`` new items of ``feed``."""
    more = count - len(shown)
    tail = f" {ELLIPSIS} and {more} more" if more > 0 else ""
    if feed == "signups":
        if count == 1:
            return f"New signup: {shown[0]}"
        return f"{plural(count, 'new signup')}: {', '.join(shown)}{tail}"
    if count == 1:
        return f"{code(feed)}: {shown[0]}"
    return f"{code(feed)}: {count} new: {' · '.join(shown)}{tail}"


class FeedRelays:
    """Implements :class:`backchannel.operator_backend.Relays` for the chat bot."""

    def __init__(
        self,
        conn: XmppConnection,
        pubsub: PubSub,
        settings: Settings,
        state: BotState,
        *,
        is_room: Callable[[str], bool],
        can_send: Callable[[str], bool] = lambda target: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn = conn
        self.pubsub = pubsub
        self.settings = settings
        self.state = state
        self.interval = settings.bot.relay_interval
        self._is_room = is_room
        self._can_send = can_send
        self._clock = clock
        self._feed_of = {settings.nodes.feed(f): f for f in settings.nodes.feeds}
        self._targets: dict[str, dict[str, str]] = {}  # feed -> target -> kind
        self._pending: dict[str, _Pending] = {}
        self._last_sent: dict[str, float] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}
        self._seen: dict[str, OrderedDict[str, None]] = {}
        self.messages_sent = 0
        self.items_relayed = 0
        self.duplicates = 0

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        for feed, target, kind in self.state.relays():
            if feed in self.settings.nodes.feeds:
                self._targets.setdefault(feed, {})[target] = kind
        self.conn.on_message(NOTIFICATION_XPATH, self._on_notification, name="bot:relay")
        self.conn.on_ready(self._on_session)
        if self.conn.ready.is_set():
            await self._on_session(False)

    async def close(self) -> None:
        self.conn.remove_message_handler("bot:relay")
        tasks = list(self._flushers.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._flushers.clear()

    async def _on_session(self, resumed: bool) -> None:
        for feed, targets in list(self._targets.items()):
            if targets:
                await self.pubsub.subscribe(self.settings.nodes.feed(feed), self.conn.bare_jid)
        self.wake()

    def wake(self, target: str | None = None) -> None:
        """Send what waited (for the connection, or for a room to be joined)."""
        for t in [target] if target else list(self._pending):
            if self._pending.get(t):
                self._schedule(t)

    # -- the Relays protocol ---------------------------------------------------------------
    async def subscribe(self, feed: str, target: str) -> None:
        kind = "groupchat" if self._is_room(target) else "chat"
        node = self.settings.nodes.feed(feed)
        try:
            await self.pubsub.subscribe(node, self.conn.bare_jid)
        except NotConnected:
            raise
        except XmppError as exc:
            log.warning("cannot subscribe to %s: %s", node, exc)
            raise
        self.state.add_relay(feed, target, kind)
        self._targets.setdefault(feed, {})[target] = kind
        log.info("relaying %s into %s (%s)", feed, target, kind)

    async def unsubscribe(self, feed: str, target: str) -> bool:
        removed = self.state.remove_relay(feed, target)
        targets = self._targets.get(feed, {})
        removed = targets.pop(target, None) is not None or removed
        if removed:
            log.info("stopped relaying %s into %s", feed, target)
        if not targets and feed in self._targets:
            del self._targets[feed]
            try:
                await self.pubsub.unsubscribe(self.settings.nodes.feed(feed), self.conn.bare_jid)
            except XmppError as exc:
                log.info("unsubscribing from %s: %s", feed, exc)
        return removed

    def subscriptions(self, target: str) -> Sequence[str]:
        return sorted(f for f, targets in self._targets.items() if target in targets)

    # -- incoming items --------------------------------------------------------------------
    def _on_notification(self, message: ET.Element) -> None:
        try:
            self._take(message)
        except Exception:
            log.exception("relay: could not handle a notification")

    def _take(self, message: ET.Element) -> None:
        items = message.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items")
        if items is None:
            return
        feed = self._feed_of.get(items.get("node", ""))
        targets = self._targets.get(feed, {}) if feed else {}
        if feed is None or not targets:
            return
        seen = self._seen.setdefault(feed, OrderedDict())
        for item in items.findall(f"{{{NS_EVENT}}}item"):
            item_id = item.get("id", "")
            if item_id and item_id in seen:
                self.duplicates += 1
                continue
            if item_id:
                seen[item_id] = None
                if len(seen) > REMEMBERED:
                    seen.popitem(last=False)
            children = list(item)
            line = item_line(feed, children[0] if children else None)
            self.items_relayed += 1
            for target in targets:
                self._pending.setdefault(target, _Pending()).add(feed, line)
                self._schedule(target)

    # -- batching --------------------------------------------------------------------------
    def _schedule(self, target: str) -> None:
        task = self._flushers.get(target)
        if task is not None and not task.done():
            return
        last = self._last_sent.get(target)
        delay = 0.0 if last is None else max(0.0, last + self.interval - self._clock())
        self._flushers[target] = asyncio.create_task(self._flush_later(target, delay),
                                                     name=f"relay:{target}")

    async def _flush_later(self, target: str, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        self._flushers.pop(target, None)
        self._flush(target)

    def _flush(self, target: str) -> None:
        pending = self._pending.get(target)
        if not pending:
            return
        if not self.conn.ready.is_set() or not self._can_send(target):
            return  # kept; wake() sends it once the session (or the room) is back
        kind = self._kind(target)
        text = "\n".join(summary(feed, count, pending.shown[feed])
                         for feed, count in pending.counts.items())
        try:
            self.conn.send_message(target, text, kind)
        except NotConnected:
            return
        del self._pending[target]
        self._last_sent[target] = self._clock()
        self.messages_sent += 1

    def _kind(self, target: str) -> str:
        for targets in self._targets.values():
            if target in targets:
                return targets[target]
        return "groupchat" if self._is_room(target) else "chat"
