"""The client side of the bot's ad-hoc door: what the CLI and the tests speak.

Why a small client of our own: the CLI runs operator commands on a running bot over
XMPP (XEP-0050), and tests drive the door the way a client such as Gajim would. Both
need the same few verbs: list the command nodes, execute one, submit a form, cancel.
Replies are read into a :class:`Reply` (status, session, form fields, notes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

from bot.forms import NS_DATA, instructions, is_true, read_fields, submit_form
from pubsub.connection import XmppConnection

NS_CMD = "http://jabber.org/protocol/commands"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
BOT_RESOURCE = "bot"  # the bot's fixed resource: the CLI addresses bot@domain/bot
LINE_NODE = "line"


def bot_full_jid(bot_bare: str) -> str:
    return f"{bot_bare}/{BOT_RESOURCE}"


@dataclass
class Reply:
    """One answer of the ad-hoc door."""

    node: str
    sessionid: str
    status: str  # executing, completed, canceled
    fields: dict[str, list[str]] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)
    form_type: str = ""
    instructions: str = ""
    field_types: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        if "text" in self.fields:
            return "\n".join(self.fields["text"])
        return "\n".join(text for _, text in self.notes)

    @property
    def ok(self) -> bool:
        return is_true(self.fields.get("ok"))

    @property
    def outcome(self) -> str:
        return (self.fields.get("outcome") or ["error"])[0]

    @property
    def data(self) -> Any:
        raw = (self.fields.get("data") or ["null"])[0]
        return json.loads(raw)

    @property
    def asks_confirmation(self) -> bool:
        return self.status == "executing" and "confirm" in self.field_types


def parse_reply(xml: ET.Element) -> Reply:
    cmd = xml.find(f"{{{NS_CMD}}}command")
    if cmd is None:
        raise ValueError("the reply holds no <command/>")
    form = cmd.find(f"{{{NS_DATA}}}x")
    types = {}
    if form is not None:
        types = {f.get("var", ""): f.get("type", "text-single")
                 for f in form.findall(f"{{{NS_DATA}}}field")}
    return Reply(
        node=cmd.get("node", ""), sessionid=cmd.get("sessionid", ""),
        status=cmd.get("status", ""), fields=read_fields(cmd),
        notes=[(n.get("type", "info"), n.text or "") for n in cmd.findall(f"{{{NS_CMD}}}note")],
        form_type=form.get("type", "") if form is not None else "",
        instructions=instructions(form), field_types=types,
    )


class AdhocClient:
    """Ad-hoc requests to one entity (the bot) over one connection."""

    def __init__(self, conn: XmppConnection, to: str, *, timeout: float = 40.0) -> None:
        self.conn = conn
        self.to = to
        self.timeout = timeout

    async def commands(self) -> list[tuple[str, str]]:
        """(node, name) of the commands the entity offers us."""
        query = ET.Element(f"{{{NS_ITEMS}}}query", {"node": NS_CMD})
        reply = await self.conn.iq(self.to, "get", query, timeout=self.timeout)
        found = reply.find(f"{{{NS_ITEMS}}}query")
        items = found.findall(f"{{{NS_ITEMS}}}item") if found is not None else []
        return [(i.get("node", ""), i.get("name", "")) for i in items]

    async def _send(self, node: str, action: str, sessionid: str = "",
                    fields: Mapping[str, str] | None = None) -> Reply:
        attrs = {"node": node, "action": action}
        if sessionid:
            attrs["sessionid"] = sessionid
        cmd = ET.Element(f"{{{NS_CMD}}}command", attrs)
        if fields is not None:
            cmd.append(submit_form(fields))
        return parse_reply(await self.conn.iq(self.to, "set", cmd, timeout=self.timeout))

    async def execute(self, node: str, fields: Mapping[str, str] | None = None) -> Reply:
        """Start ``node``; with ``fields``, submit them in the same request."""
        return await self._send(node, "execute", fields=fields)

    async def submit(self, reply: Reply, fields: Mapping[str, str],
                     action: str = "complete") -> Reply:
        return await self._send(reply.node, action, reply.sessionid, fields)

    async def cancel(self, reply: Reply) -> Reply:
        return await self._send(reply.node, "cancel", reply.sessionid)
