"""Group chat rooms (XEP-0045): join, rejoin after every reconnect, know who is who.

Why by hand, from raw presence: what the bot needs from a room is small and must be
exact. It joins each configured room without history, rejoins after every new session
(a server restart empties its rooms), and keeps, per room, the occupants' *real* bare
JIDs as the room reports them. Roles are bound to real JIDs; a room occupant JID
(``room@muc/nick``) carries no role. A room that hides real JIDs from the bot
(semi-anonymous: its self-presence lacks status code 100) gets no commands at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from commands.model import bare_jid
from pubsub.connection import XmppConnection

log = logging.getLogger(__name__)

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SELF = "110"
NON_ANONYMOUS = "100"
NOW_NON_ANONYMOUS, NOW_SEMI_ANONYMOUS = "172", "173"
MAX_NICK_TRIES = 3


@dataclass
class Room:
    """What the bot knows about one room it is in (or trying to be in)."""

    jid: str
    nick: str
    joined: bool = False
    non_anonymous: bool = False
    occupants: dict[str, str | None] = field(default_factory=dict)  # nick -> real bare JID
    nick_tries: int = 0
    joins: int = 0  # how many times the room confirmed our join


def status_codes(x: ET.Element | None) -> set[str]:
    if x is None:
        return set()
    return {s.get("code", "") for s in x.findall(f"{{{NS_MUC_USER}}}status")}


class Rooms:
    """The configured rooms and their occupants, kept current from presence."""

    def __init__(self, conn: XmppConnection, nick: str, rooms: Iterable[str], *,
                 on_joined: Callable[[str], None] | None = None) -> None:
        self.conn = conn
        self.nick = nick
        self.rooms = {bare_jid(r): Room(bare_jid(r), nick) for r in rooms}
        self._on_joined = on_joined

    def start(self) -> None:
        self.conn.on_message("{jabber:client}presence", self._guard(self._on_presence),
                             name="bot:muc-presence")
        self.conn.on_message(f"{{jabber:client}}message/{{{NS_MUC_USER}}}x",
                             self._guard(self._on_room_message), name="bot:muc-status")
        self.conn.on_ready(self._on_session)
        if self.conn.ready.is_set():
            self.join_all()

    def close(self) -> None:
        for name in ("bot:muc-presence", "bot:muc-status"):
            self.conn.remove_message_handler(name)
        if not self.conn.ready.is_set():
            return
        for room in self.rooms.values():
            if room.joined:
                self.conn.client.send_presence(pto=f"{room.jid}/{room.nick}", ptype="unavailable")

    # -- queries ---------------------------------------------------------------------------
    def get(self, jid: str) -> Room | None:
        return self.rooms.get(bare_jid(jid))

    def is_room(self, jid: str) -> bool:
        """True for a room JID: a configured room or anything on the MUC service."""
        bare = bare_jid(jid)
        return bare in self.rooms or bare.partition("@")[2] == \
            self.conn.settings.muc_service.lower()

    def can_send(self, target: str) -> bool:
        """A room takes our messages only once we are in it; chats always do."""
        room = self.get(target)
        return room.joined if room is not None else not self.is_room(target)

    def real_jid(self, occupant: str) -> str | None:
        """The real bare JID behind ``room@muc/nick``, or None when the room hides it."""
        room = self.get(occupant)
        if room is None or not room.non_anonymous:
            return None
        return room.occupants.get(occupant.partition("/")[2])

    # -- joining ---------------------------------------------------------------------------
    async def _on_session(self, resumed: bool) -> None:
        self.join_all()

    def join_all(self) -> None:
        for room in self.rooms.values():
            room.joined = False
            room.occupants.clear()
            room.nick_tries = 0
            room.nick = self.nick
            self.join(room)

    def join(self, room: Room) -> None:
        presence = self.conn.client.Presence()
        presence["to"] = f"{room.jid}/{room.nick}"
        x = ET.SubElement(presence.xml, f"{{{NS_MUC}}}x")
        ET.SubElement(x, f"{{{NS_MUC}}}history", {"maxstanzas": "0"})
        log.info("joining room %s as %s", room.jid, room.nick)
        presence.send()

    # -- presence ----------------------------------------------------------------------------
    def _guard(self, handler: Callable[[ET.Element], None]) -> Callable[[ET.Element], None]:
        def guarded(xml: ET.Element) -> None:
            try:
                handler(xml)
            except Exception:
                log.exception("room handler failed")

        return guarded

    def _on_presence(self, xml: ET.Element) -> None:
        sender = xml.get("from", "")
        room = self.get(sender)
        if room is None:
            return
        nick = sender.partition("/")[2]
        kind = xml.get("type", "available")
        if kind == "error":
            self._on_error(room, xml)
            return
        x = xml.find(f"{{{NS_MUC_USER}}}x")
        codes = status_codes(x)
        item = x.find(f"{{{NS_MUC_USER}}}item") if x is not None else None
        real = item.get("jid") if item is not None else None
        is_self = SELF in codes
        if kind == "unavailable":
            room.occupants.pop(nick, None)
            if is_self:
                room.joined = False
                log.warning("left room %s (status %s)", room.jid, ",".join(sorted(codes)))
            return
        room.occupants[nick] = bare_jid(real) if real else None
        if is_self:
            room.nick = nick
            room.non_anonymous = NON_ANONYMOUS in codes
            first = not room.joined
            room.joined = True
            if first:
                room.joins += 1
                log.info("joined room %s as %s (%s)", room.jid, nick,
                         "real JIDs visible" if room.non_anonymous else "real JIDs HIDDEN")
                if self._on_joined is not None:
                    self._on_joined(room.jid)

    def _on_error(self, room: Room, xml: ET.Element) -> None:
        error = xml.find("{jabber:client}error")
        condition = "undefined-condition"
        if error is not None:
            for child in error:
                if child.tag.startswith(f"{{{NS_STANZAS}}}") and not child.tag.endswith("text"):
                    condition = child.tag.rsplit("}", 1)[1]
        log.warning("room %s refused us as %s: %s", room.jid, room.nick, condition)
        if condition == "conflict" and room.nick_tries < MAX_NICK_TRIES:
            room.nick_tries += 1
            room.nick = f"{self.nick}{'_' * room.nick_tries}"
            self.join(room)

    def _on_room_message(self, xml: ET.Element) -> None:
        """Configuration changes announced in the room (status 172/173)."""
        room = self.get(xml.get("from", ""))
        if room is None or "/" in xml.get("from", ""):
            return
        codes = status_codes(xml.find(f"{{{NS_MUC_USER}}}x"))
        if NOW_NON_ANONYMOUS in codes:
            room.non_anonymous = True
        elif NOW_SEMI_ANONYMOUS in codes:
            room.non_anonymous = False
            log.warning("room %s now hides real JIDs; no commands taken there", room.jid)
