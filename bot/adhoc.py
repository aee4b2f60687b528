"""The XEP-0050 ad-hoc front door: one command node per command the caller may run.

Why not slixmpp's xep_0050 plugin: it publishes one static command list for everybody
(through xep_0030's static items), does not check that later steps of a session come
from the JID that started it, and only resets an idle timer per step. Here:

- disco#items for the ``commands`` node is answered per requesting bare JID: only the
  nodes its role may run (plus ``line``, which runs a whole command line and is what
  the CLI uses; the dispatcher still checks every command);
- each node's form is generated from the command's argument schema (:mod:`bot.forms`);
- a command that needs confirmation gets a second step: a form with a boolean
  ``confirm`` field bound to the dispatcher's confirmation token;
- sessions belong to the full JID that started them and expire 120 s after they
  started; a later step from anyone else, or after that, is refused.

Every step goes through :meth:`Dispatcher.run` (where="adhoc"), so roles, rate limits
and the audit trail are the same as in chat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp.plugins.xep_0030.stanza.info import DiscoInfo
from slixmpp.plugins.xep_0030.stanza.items import DiscoItems

from backchannel.config import BotSettings
from backchannel.errors import CommandError, PermissionDenied, UsageError
from bot.adhoc_client import LINE_NODE, NS_CMD
from bot.forms import (
    command_form,
    confirm_form,
    is_true,
    line_form,
    read_fields,
    result_form,
)
from commands.backend import OperatorBackend
from commands.dispatch import Dispatcher
from commands.model import Command, Context, Outcome, RateLimited, Result, bare_jid, role_of
from pubsub.connection import XmppConnection

log = logging.getLogger(__name__)

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SESSION_TTL = 120.0
MAX_SESSIONS = 1000
MAX_PER_JID = 10


class AdhocError(Exception):
    """An IQ error to send back: a stanza condition and an optional XEP-0050 reason."""

    def __init__(self, condition: str, kind: str = "modify", reason: str = "",
                 text: str = "") -> None:
        super().__init__(text or condition)
        self.condition, self.kind, self.reason, self.text = condition, kind, reason, text


@dataclass
class Session:
    id: str
    owner: str  # the full JID that started it
    node: str
    command: Command | None  # None for the line node
    expires: float
    token: str | None = None  # set while waiting for the confirmation step


def node_of(command: Command) -> str:
    return command.name.replace(" ", "-")


class AdhocDoor:
    """Serves ad-hoc commands and their discovery on the bot's connection."""

    def __init__(self, conn: XmppConnection, settings: BotSettings, dispatcher: Dispatcher,
                 backend: OperatorBackend, *, ttl: float = SESSION_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.conn = conn
        self.settings = settings
        self.dispatcher = dispatcher
        self.backend = backend
        self.ttl = ttl
        self._clock = clock
        self._by_node = {node_of(c): c for c in dispatcher.registry if not c.hidden}
        self.sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- wiring ----------------------------------------------------------------------------
    def start(self) -> None:
        self.conn.on_message(f"{{jabber:client}}iq/{{{NS_CMD}}}command", self._on_iq,
                             name="bot:adhoc")
        disco = self.conn.client.plugin["xep_0030"]
        static = disco.static
        disco.api.register(_disco_handler(self._items, static.get_items), "get_items")
        disco.api.register(_disco_handler(self._info, static.get_info), "get_info")

    async def close(self) -> None:
        self.conn.remove_message_handler("bot:adhoc")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def nodes_for(self, jid: str) -> list[tuple[str, str]]:
        """(node, name) of every command ``jid`` may run, the line node first."""
        role = role_of(jid, self.settings.roles)
        nodes = [(LINE_NODE, "Run a command line")]
        nodes += [(node_of(c), f"{c.name}: {c.summary}")
                  for c in self.dispatcher.visible(role)]
        return nodes

    # -- disco -----------------------------------------------------------------------------
    def _items(self, node: str | None, requester: str, iq: Any) -> Any:
        if node != NS_CMD:
            return None
        items = DiscoItems()
        for sub, name in self.nodes_for(requester):
            items.add_item(self.conn.client.boundjid, sub, name)
        return items

    def _info(self, node: str | None, requester: str, iq: Any) -> Any:
        if node == NS_CMD:
            info = DiscoInfo()
            info.add_identity("automation", "command-list", name="Commands")
            info.add_feature(NS_CMD)
            return info
        if node and (node == LINE_NODE or node in self._by_node):
            if node not in {n for n, _ in self.nodes_for(requester)}:
                return _error_iq(iq, AdhocError("item-not-found", "cancel"))
            info = DiscoInfo()
            info.add_identity("automation", "command-node", name=node)
            info.add_feature(NS_CMD)
            info.add_feature("jabber:x:data")
            return info
        return None

    # -- commands --------------------------------------------------------------------------
    def _on_iq(self, xml: ET.Element) -> None:
        if xml.get("type") != "set":
            if xml.get("type") == "get":
                self._send(_error(xml, AdhocError("bad-request")))
            return
        task = asyncio.create_task(self._handle(xml), name="adhoc")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, xml: ET.Element) -> None:
        try:
            reply = await self.step(xml)
        except AdhocError as exc:
            reply = _error(xml, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ad-hoc step failed")
            reply = _error(xml, AdhocError("internal-server-error", "wait"))
        self._send(reply)

    def _send(self, xml: ET.Element) -> None:
        if not self.conn.ready.is_set():
            log.info("ad-hoc reply dropped: not connected")
            return
        iq = self.conn.client.Iq()
        iq["type"] = xml.get("type", "result")
        iq["id"] = xml.get("id", "")
        if xml.get("to"):
            iq["to"] = xml.get("to", "")
        for child in xml:
            iq.xml.append(child)
        iq.send()  # type: ignore[no-untyped-call]

    async def step(self, xml: ET.Element) -> ET.Element:
        """The reply (a result IQ) to one ad-hoc request; AdhocError for an IQ error."""
        command_el = xml.find(f"{{{NS_CMD}}}command")
        assert command_el is not None
        requester = xml.get("from", "")
        node = command_el.get("node", "")
        action = command_el.get("action", "execute")
        sid = command_el.get("sessionid")
        ctx = Context(caller=bare_jid(requester), where="adhoc", backend=self.backend,
                      role=role_of(requester, self.settings.roles))
        fields = read_fields(command_el)
        if sid:
            return await self._next(xml, self._session(sid, requester, node), action,
                                    fields, ctx)
        if action == "cancel":
            raise AdhocError("bad-request", reason="bad-sessionid")
        if node == LINE_NODE:
            if "line" in fields:
                return await self._run(xml, node, None, " ".join(fields["line"]), {}, ctx)
            session = self._open(requester, node, None)
            return _command(xml, node, session.id, "executing", line_form(), actions=True)
        command = self._by_node.get(node)
        if command is None:
            raise AdhocError("item-not-found", "cancel")
        if not self.dispatcher.registry.allowed(command, ctx.role):
            try:  # let the dispatcher refuse it, so the attempt is audited
                await self.dispatcher.run(command.name, {}, ctx)
            except CommandError as exc:
                raise AdhocError("forbidden", "auth", text=str(exc)) from exc
            raise AdhocError("forbidden", "auth")
        if fields or not command.arguments:
            return await self._run(xml, node, command, command.name, fields, ctx)
        session = self._open(requester, node, command)
        return _command(xml, node, session.id, "executing", command_form(command), actions=True)

    async def _next(self, xml: ET.Element, session: Session, action: str,
                    fields: dict[str, list[str]], ctx: Context) -> ET.Element:
        del self.sessions[session.id]
        if action == "cancel":
            return _command(xml, session.node, session.id, "canceled")
        if action == "prev":
            raise AdhocError("bad-request", reason="bad-action")
        if session.token is not None:
            if not is_true(fields.get("confirm")):
                return _done(xml, session.node, session.id, "Cancelled; nothing was done.",
                             ok=False, outcome="error", data={"confirmed": False})
            return await self._run(xml, session.node, session.command, "confirm",
                                   {"token": [session.token]}, ctx, session=session)
        if session.command is None:
            return await self._run(xml, session.node, None, " ".join(fields.get("line", [])),
                                   {}, ctx, session=session)
        return await self._run(xml, session.node, session.command, session.command.name,
                               fields, ctx, session=session)

    async def _run(self, xml: ET.Element, node: str, command: Command | None, name: str,
                   fields: dict[str, list[str]], ctx: Context, *,
                   session: Session | None = None) -> ET.Element:
        requester = xml.get("from", "")
        sid = session.id if session else self._new_id()
        outcome: Outcome = "ok"
        try:
            if command is None and name != "confirm":
                result = await self.dispatcher.run(name, None, ctx)
            else:
                known = {"token"} if name == "confirm" else \
                    {a.name for a in command.arguments} if command else set()
                args = {k: " ".join(v) for k, v in fields.items() if k in known}
                result = await self.dispatcher.run(name, args, ctx)
        except RateLimited as exc:
            outcome, text = "ratelimited", str(exc)
        except UsageError as exc:
            outcome, text = "usage", str(exc)
        except PermissionDenied as exc:
            outcome, text = "denied", str(exc)
        except CommandError as exc:
            outcome, text = "error", str(exc)
        else:
            if result.confirm_token:
                pending = self._open(requester, node, command, sid=sid)
                pending.token = result.confirm_token
                return _command(xml, node, pending.id, "executing",
                                confirm_form(result.text), actions=False, note=result.text)
            try:
                data = result.json()
                json.dumps(data)
            except Exception:  # a command's data bug: the text still reaches the operator
                log.exception("command %s: its data is not JSON", name)
                data = None
            return _done(xml, node, sid, result.text, ok=result.ok,
                         outcome="ok" if result.ok else "error", data=data,
                         result=result)
        return _done(xml, node, sid, text, ok=False, outcome=outcome, data=None, error=True)

    # -- sessions --------------------------------------------------------------------------
    def _new_id(self) -> str:
        return secrets.token_urlsafe(12)

    def _open(self, owner: str, node: str, command: Command | None,
              sid: str | None = None) -> Session:
        now = self._clock()
        for old in [s for s in self.sessions.values() if s.expires < now]:
            del self.sessions[old.id]
        mine = sorted((s for s in self.sessions.values() if s.owner == owner),
                      key=lambda s: s.expires)
        for old in mine[: max(0, len(mine) - MAX_PER_JID + 1)]:
            del self.sessions[old.id]
        if len(self.sessions) >= MAX_SESSIONS:
            raise AdhocError("resource-constraint", "wait")
        session = Session(sid or self._new_id(), owner, node, command, now + self.ttl)
        self.sessions[session.id] = session
        return session

    def _session(self, sid: str, requester: str, node: str) -> Session:
        session = self.sessions.get(sid)
        if session is None or session.owner != requester or session.node != node:
            if session is not None:
                log.warning("ad-hoc session %s… of %s refused to %s", sid[:6], session.owner,
                            requester)
            raise AdhocError("bad-request", reason="bad-sessionid",
                             text="No such session for you.")
        if self._clock() > session.expires:
            del self.sessions[sid]
            raise AdhocError("not-allowed", "cancel", reason="session-expired",
                             text=f"The session expired after {self.ttl:.0f} s; start again.")
        return session


# -- stanzas ------------------------------------------------------------------------------


def _reply_iq(request: ET.Element, kind: str = "result") -> ET.Element:
    attrs = {"type": kind, "id": request.get("id", "")}
    if request.get("from"):
        attrs["to"] = request.get("from", "")
    return ET.Element("{jabber:client}iq", attrs)


def _command(request: ET.Element, node: str, sid: str, status: str,
             form: ET.Element | None = None, *, actions: bool | None = None,
             note: str = "", note_type: str = "info") -> ET.Element:
    iq = _reply_iq(request)
    cmd = ET.SubElement(iq, f"{{{NS_CMD}}}command",
                        {"node": node, "sessionid": sid, "status": status})
    if actions is not None:
        acts = ET.SubElement(cmd, f"{{{NS_CMD}}}actions", {"execute": "complete"})
        ET.SubElement(acts, f"{{{NS_CMD}}}complete")
    if note:
        ET.SubElement(cmd, f"{{{NS_CMD}}}note", {"type": note_type}).text = note
    if form is not None:
        cmd.append(form)
    return iq


def _done(request: ET.Element, node: str, sid: str, text: str, *, ok: bool, outcome: str,
          data: Any, error: bool = False, result: Result | None = None) -> ET.Element:
    form = result_form(node, text, ok=ok, outcome=outcome, data=data)
    return _command(request, node, sid, "completed", form,
                    note=text if error else "", note_type="error")


def _error(request: ET.Element, exc: AdhocError) -> ET.Element:
    iq = _reply_iq(request, "error")
    command = request.find(f"{{{NS_CMD}}}command")
    if command is not None:
        iq.append(ET.Element(command.tag, dict(command.attrib)))
    error = ET.SubElement(iq, "{jabber:client}error", {"type": exc.kind})
    ET.SubElement(error, f"{{{NS_STANZAS}}}{exc.condition}")
    if exc.reason:
        ET.SubElement(error, f"{{{NS_CMD}}}{exc.reason}")
    if exc.text:
        ET.SubElement(error, f"{{{NS_STANZAS}}}text").text = exc.text
    return iq


def _error_iq(iq: Any, exc: AdhocError) -> Any:
    """A slixmpp Iq error reply to a disco request (the disco plugin sends it as is)."""
    reply = iq.reply(clear=True)
    reply["type"] = "error"
    for child in _error(iq.xml, exc):
        if child.tag == "{jabber:client}error":
            reply.xml.append(child)
    return reply


def _disco_handler(ours: Callable[[str | None, str, Any], Any],
                   fallback: Callable[..., Any]) -> Callable[..., Any]:
    """An xep_0030 API handler: ours for our nodes, slixmpp's static data otherwise."""

    def handler(jid: Any, node: str | None, ifrom: Any, data: Any) -> Any:
        found = ours(node or None, str(ifrom or ""), data)
        if found is not None:
            return found
        result = fallback(jid, node, ifrom, data)
        if not node and hasattr(result, "add_feature"):
            result.add_feature(NS_CMD)
        return result

    return handler
