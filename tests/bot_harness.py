"""A bot world for tests: a pipeline, a worker and the bot in one Runtime, plus chat clients.

:class:`Chatter` is an XMPP client that talks to the bot and reads its answers, so tests
read like transcripts: ``assert "connected" in await op.ask("status")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from backchannel import config
from backchannel.app import Runtime, start_components
from backchannel.config import Account, Secret
from backchannel.localserver import ManagedServer, ServerState
from bot.component import Bot
from pubsub.client import data_form
from pubsub.connection import XmppConnection
from tests.pipeline_harness import Pipeline

_n = itertools.count()
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"


# A feed relay message (bot/relay.py), as opposed to the answer to a command.
RELAY = re.compile(r"(New signup: |\d+ new signups: |`[a-z0-9_-]+`: )")

@dataclass
class Said:
    sender: str
    kind: str
    body: str
    at: float


class Chatter:
    """One client's view of the conversation with the bot."""

    def __init__(self, conn: XmppConnection, bot_jid: str) -> None:
        self.conn = conn
        self.bot_jid = bot_jid
        self.inbox: list[Said] = []
        self._arrived = asyncio.Event()
        conn.on_message("{jabber:client}message/{jabber:client}body", self._on_message,
                        name=f"test-inbox-{next(_n)}")

    def _on_message(self, xml: ET.Element) -> None:
        body = xml.find("{jabber:client}body")
        self.inbox.append(Said(xml.get("from", ""), xml.get("type", "normal"),
                               (body.text or "") if body is not None else "", time.monotonic()))
        self._arrived.set()

    def from_(self, sender_prefix: str, since: int = 0, to_nick: str = "",
              replies_only: bool = False) -> list[Said]:
        """Messages from ``sender_prefix`` since index ``since`` (in a room: to ``to_nick``;
        ``replies_only``: leave out feed relay messages, which may arrive at any time)."""
        return [m for m in self.inbox[since:] if m.sender.startswith(sender_prefix)
                and (not to_nick or m.body.startswith(f"{to_nick}:"))
                and not (replies_only and RELAY.match(m.body.removeprefix(f"{to_nick}: ")))]

    async def wait_for(self, sender_prefix: str, since: int, count: int = 1,
                       timeout: float = 10.0, to_nick: str = "",
                       replies_only: bool = False) -> list[Said]:
        deadline = time.monotonic() + timeout
        while len(self.from_(sender_prefix, since, to_nick, replies_only)) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no answer from {sender_prefix} within {timeout} s; "
                                     f"got {[m.body[:80] for m in self.inbox[since:]]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        return self.from_(sender_prefix, since, to_nick, replies_only)

    async def ask(self, line: str, *, to: str | None = None, kind: str = "chat",
                  timeout: float = 10.0, expect_from: str | None = None,
                  chunks: int = 1, to_nick: str = "") -> str:
        """Send ``line``; the text of the next ``chunks`` messages from the bot, joined.

        In a room other people's answers arrive too: ``to_nick`` keeps only the bot's
        answers addressed to that nick (the bot starts them with ``nick:``).
        """
        since = len(self.inbox)
        target = to or self.bot_jid
        self.conn.send_message(target, line, kind)
        got = await self.wait_for(expect_from or target, since, chunks, timeout=timeout,
                                  to_nick=to_nick, replies_only=True)
        return "\n".join(m.body for m in got)

    def join(self, room: str, nick: str) -> None:
        presence = self.conn.client.Presence()
        presence["to"] = f"{room}/{nick}"
        x = ET.SubElement(presence.xml, f"{{{NS_MUC}}}x")
        ET.SubElement(x, f"{{{NS_MUC}}}history", {"maxstanzas": "0"})
        presence.send()


@dataclass
class World:
    pipeline: Pipeline
    runtime: Runtime
    bot: Bot
    settings: config.Settings
    stack: contextlib.AsyncExitStack

    @property
    def bot_jid(self) -> str:
        return self.bot.conn.jid

    async def client(self, account: str | Account, resource: str = "test") -> Chatter:
        acct = self.settings.account(account) if isinstance(account, str) else account
        conn = XmppConnection(self.settings.xmpp, acct, resource=resource)
        await conn.start()
        self.stack.push_async_callback(conn.close)
        return Chatter(conn, self.bot_jid)


def stranger_account(managed: ManagedServer, state: ServerState) -> Account:
    password = managed.adduser("stranger", "stranger-password")
    return Account(jid=state.jid("stranger"), password=Secret(password))


@contextlib.asynccontextmanager
async def bot_world(state: ServerState, var: Path, *, rooms: tuple[str, ...] = (),
                    relay_interval: float = 3.0, rate: int = 1000,
                    components: tuple[str, ...] = ("worker", "bot"),
                    roles: dict[str, str] | None = None,
                    **pipeline: Any) -> AsyncIterator[World]:
    async with Pipeline(state, var, **pipeline) as p:
        settings = replace(p.settings, bot=replace(
            p.settings.bot, rooms=rooms, relay_interval=relay_interval,
            rate_limit_per_minute=rate,
            roles={**p.settings.bot.roles, **(roles or {})}))
        runtime = Runtime(settings)
        async with contextlib.AsyncExitStack() as stack:
            await start_components(runtime, stack, list(components))
            yield World(p, runtime, runtime.bot, settings, stack)


async def open_room_hiding_real_jids(owner: XmppConnection, room: str) -> None:
    """``owner`` creates ``room`` and makes it semi-anonymous (real JIDs for moderators
    only): the kind of room where the bot must refuse commands."""
    presence = owner.client.Presence()
    presence["to"] = f"{room}/owner"
    presence.xml.append(ET.Element(f"{{{NS_MUC}}}x"))
    presence.send()
    query = ET.Element("{http://jabber.org/protocol/muc#owner}query")
    query.append(data_form({"muc#roomconfig_whois": "moderators"},
                           form_type="http://jabber.org/protocol/muc#roomconfig"))
    await owner.iq(room, "set", query)


def room_name(prefix: str, state: ServerState) -> str:
    return f"{prefix}{next(_n)}x{int(time.time() * 1000) % 1000000}@{state.muc_service}"
