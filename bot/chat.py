"""The chat front door: private chats and group chat rooms onto the command set.

Why this shape: slixmpp calls our handler on its event loop with the raw stanza; the
handler only decides whether and how to answer, then starts one tracked task that runs
the command through :meth:`Dispatcher.run` and replies from the same loop (never from a
thread: that is what stalled other Python bots for minutes). What is ignored: errors,
empty bodies, our own echoes, delayed room history, room chatter not addressed to us
(by ``nick:``, ``nick,`` or the prefix). Roles come from the sender's real bare JID; in a
room, from the occupant list (see :mod:`bot.rooms`), never from the occupant JID.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from backchannel.config import BotSettings
from backchannel.errors import CommandError, NotConnected
from bot.rooms import Room, Rooms
from commands.backend import OperatorBackend
from commands.dispatch import Dispatcher
from commands.model import Context, RateLimited, Role, Where, bare_jid, role_of
from commands.render import chunks
from pubsub.connection import XmppConnection

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 256  # commands running at once, all senders together
MAX_BODY = 100_000  # longer bodies are not even parsed
CHUNK = 3000
ANONYMOUS_REFUSAL = (
    "I take no commands in this room: it hides members' real JIDs from me, so I cannot "
    "tell who you are. Talk to me in a private chat, or make the room non-anonymous."
)
REFUSAL_EVERY = 30.0  # at most one refusal per room in this many seconds
NS_DELAY = "urn:xmpp:delay"


@dataclass(frozen=True)
class Incoming:
    """One message worth answering: what to run, as whom, and where to reply."""

    line: str
    caller: str
    where: Where
    reply_to: str
    kind: str  # message type of the reply
    room: str | None = None
    relay_target: str = ""
    mention: str = ""  # "nick" to address the reply to in a room


def is_delayed(xml: ET.Element) -> bool:
    return xml.find(f"{{{NS_DELAY}}}delay") is not None or \
        xml.find("{jabber:x:delay}x") is not None


class ChatDoor:
    """Answers chat and group chat messages addressed to the bot."""

    def __init__(self, conn: XmppConnection, settings: BotSettings, dispatcher: Dispatcher,
                 backend: OperatorBackend, rooms: Rooms) -> None:
        self.conn = conn
        self.settings = settings
        self.dispatcher = dispatcher
        self.backend = backend
        self.rooms = rooms
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused_at: dict[str, float] = {}
        self.answered = 0
        self.dropped = 0
        self.failures = 0

    def start(self) -> None:
        self.conn.on_message("{jabber:client}message/{jabber:client}body", self.on_message,
                             name="bot:chat")

    # -- routing ---------------------------------------------------------------------------
    def on_message(self, xml: ET.Element) -> None:
        """The stanza handler: never raises (hostile input must not stop the bot)."""
        try:
            incoming = self.route(xml)
        except Exception:
            self.failures += 1
            log.exception("could not route a message")
            return
        if incoming is None:
            return
        if len(self._tasks) >= MAX_IN_FLIGHT:
            self.dropped += 1
            log.warning("too many commands in flight; dropped one from %s", incoming.caller)
            return
        task = asyncio.create_task(self._answer(incoming), name=f"chat:{incoming.caller}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def route(self, xml: ET.Element) -> Incoming | None:
        kind = xml.get("type", "normal")
        sender = xml.get("from", "")
        body_el = xml.find("{jabber:client}body")
        body = (body_el.text or "") if body_el is not None else ""
        if kind in ("error", "headline") or not sender or not body.strip():
            return None
        if len(body) > MAX_BODY:
            body = body[: MAX_BODY + 1]  # still "too long" for the parser, cheaply
        if kind == "groupchat":
            return self._from_room(xml, sender, body)
        if bare_jid(sender) == self.conn.bare_jid.lower():
            return None
        line = self._strip_prefix(body) or body
        room = self.rooms.get(sender)
        if room is not None:  # a private message through a room: find the real JID
            real = self.rooms.real_jid(sender)
            if real is None:
                self._refuse(room, sender, "chat")
                return None
            return Incoming(line, real, "chat", sender, "chat")
        bare = bare_jid(sender)
        return Incoming(line, bare, "chat", sender, "chat", relay_target=bare)

    def _from_room(self, xml: ET.Element, sender: str, body: str) -> Incoming | None:
        room = self.rooms.get(sender)
        nick = sender.partition("/")[2]
        if room is None or not nick or nick == room.nick or is_delayed(xml):
            return None
        line = self._addressed(body, room)
        if line is None:
            return None
        real = self.rooms.real_jid(sender)
        if real is None:
            self._refuse(room, room.jid, "groupchat")
            return None
        return Incoming(line, real, "groupchat", room.jid, "groupchat", room=room.jid,
                        relay_target=room.jid, mention=nick)

    def _strip_prefix(self, body: str) -> str | None:
        text = body.lstrip()
        prefix = self.settings.prefix
        if prefix and text.startswith(prefix):
            return text[len(prefix):].strip()
        return None

    def _addressed(self, body: str, room: Room) -> str | None:
        """The command in a room message, or None when it is not addressed to us."""
        stripped = self._strip_prefix(body)
        if stripped is not None:
            return stripped
        text = body.lstrip()
        for nick in {room.nick, self.settings.nick}:
            if text[: len(nick)].casefold() == nick.casefold() and \
                    text[len(nick): len(nick) + 1] in (":", ","):
                return text[len(nick) + 1:].strip()
        return None

    def _refuse(self, room: Room, reply_to: str, kind: str) -> None:
        now = time.monotonic()
        if now - self._refused_at.get(reply_to, -REFUSAL_EVERY) < REFUSAL_EVERY:
            return
        self._refused_at[reply_to] = now
        log.info("refused a command in %s: real JIDs hidden", room.jid)
        self._reply(reply_to, kind, ANONYMOUS_REFUSAL, "")

    # -- answering -------------------------------------------------------------------------
    async def _answer(self, msg: Incoming) -> None:
        try:
            text = await self.run(msg)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failures += 1
            log.exception("answering %s failed", msg.caller)
            text = "Something went wrong on my side; it is logged."
        if text:
            self._reply(msg.reply_to, msg.kind, text, msg.mention)
            self.answered += 1

    async def run(self, msg: Incoming) -> str:
        """The reply text for ``msg`` ("" to stay quiet)."""
        role = role_of(msg.caller, self.settings.roles) if msg.caller else Role.NOBODY
        ctx = Context(caller=msg.caller, role=role, where=msg.where, backend=self.backend,
                      room=msg.room, relay_target=msg.relay_target)
        if not msg.line:
            return "Say `help` to see what I can do."
        try:
            result = await self.dispatcher.run(msg.line, None, ctx)
        except RateLimited as exc:
            return "" if exc.repeated else str(exc)
        except CommandError as exc:
            return str(exc)
        return result.text

    def _reply(self, to: str, kind: str, text: str, mention: str) -> None:
        for i, chunk in enumerate(chunks(text, CHUNK)):
            if mention and i == 0:
                chunk = f"{mention}:{chr(10) if chunk.startswith('```') else ' '}{chunk}"
            try:
                self.conn.send_message(to, chunk, kind)
            except NotConnected:
                log.warning("reply to %s lost: not connected", to)
                return

    async def close(self) -> None:
        self.conn.remove_message_handler("bot:chat")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

