"""PubSub (XEP-0060) requests as our domain verbs, built from raw XML.

Why raw XML: the hot paths (publish, read items) stay cheap and free of slixmpp's stanza
iteration pitfalls, and the same code reads replies from Prosody, ejabberd and Openfire.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from backchannel.errors import XmppRefused
from pubsub.connection import XmppConnection

log = logging.getLogger(__name__)

NS = "http://jabber.org/protocol/pubsub"
NS_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_DATA = "jabber:x:data"
NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"


@dataclass(frozen=True)
class Item:
    """One PubSub item: its id and its payload element (None when empty)."""

    id: str
    payload: ET.Element | None


def _el(tag: str, attrs: Mapping[str, str] | None = None, *children: ET.Element) -> ET.Element:
    element = ET.Element(tag, dict(attrs or {}))
    element.extend(children)
    return element


def data_form(values: Mapping[str, str | list[str]], form_type: str = NODE_CONFIG,
              kind: str = "submit") -> ET.Element:
    form = _el(f"{{{NS_DATA}}}x", {"type": kind})
    hidden = _el(f"{{{NS_DATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
    ET.SubElement(hidden, f"{{{NS_DATA}}}value").text = form_type
    form.append(hidden)
    for var, value in values.items():
        field = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": var})
        for v in value if isinstance(value, list) else [value]:
            ET.SubElement(field, f"{{{NS_DATA}}}value").text = v
    return form


def read_form(parent: ET.Element | None) -> dict[str, list[str]]:
    """Field var -> values of the first data form under ``parent``."""
    out: dict[str, list[str]] = {}
    if parent is None:
        return out
    form = parent.find(f".//{{{NS_DATA}}}x")
    if form is None:
        return out
    for field in form.findall(f"{{{NS_DATA}}}field"):
        var = field.get("var")
        if var and var != "FORM_TYPE":
            out[var] = [v.text or "" for v in field.findall(f"{{{NS_DATA}}}value")]
    return out


def parse_items(container: ET.Element | None) -> list[Item]:
    """Items of an ``<items>`` element, in document order (oldest first on every server)."""
    if container is None:
        return []
    out = []
    for item in container.findall(f"{{{NS}}}item") + container.findall(f"{{{NS_EVENT}}}item"):
        children = list(item)
        out.append(Item(id=item.get("id", ""), payload=children[0] if children else None))
    return out


class PubSub:
    """Requests to one PubSub service over one connection."""

    def __init__(self, conn: XmppConnection, service: str) -> None:
        self.conn = conn
        self.service = service

    async def publish(self, node: str, item_id: str, payload: ET.Element, *,
                      timeout: float | None = None, wait_connected: float = 0.0) -> str:
        """Publish and return only once the server confirmed it (the item id it stored)."""
        item = _el(f"{{{NS}}}item", {"id": item_id}, payload)
        request = _el(f"{{{NS}}}pubsub", None, _el(f"{{{NS}}}publish", {"node": node}, item))
        reply = await self.conn.iq(self.service, "set", request, timeout=timeout,
                                   wait_connected=wait_connected)
        stored = reply.find(f"{{{NS}}}pubsub/{{{NS}}}publish/{{{NS}}}item")
        return stored.get("id", item_id) if stored is not None else item_id

    async def items(self, node: str, max_items: int | None = None,
                    timeout: float | None = None) -> list[Item]:
        """Retained items, oldest first (the newest ``max_items`` when given)."""
        attrs = {"node": node}
        if max_items is not None:
            attrs["max_items"] = str(max_items)
        request = _el(f"{{{NS}}}pubsub", None, _el(f"{{{NS}}}items", attrs))
        reply = await self.conn.iq(self.service, "get", request, timeout=timeout)
        return parse_items(reply.find(f"{{{NS}}}pubsub/{{{NS}}}items"))

    async def item(self, node: str, item_id: str) -> Item | None:
        request = _el(f"{{{NS}}}pubsub", None, _el(
            f"{{{NS}}}items", {"node": node}, _el(f"{{{NS}}}item", {"id": item_id})))
        try:
            reply = await self.conn.iq(self.service, "get", request)
        except XmppRefused as exc:
            if exc.condition == "item-not-found":
                return None
            raise
        found = parse_items(reply.find(f"{{{NS}}}pubsub/{{{NS}}}items"))
        return found[0] if found else None

    async def subscriptions(self, node: str) -> list[tuple[str, str]]:
        """Our own subscriptions to ``node`` as (jid, subscription state)."""
        request = _el(f"{{{NS}}}pubsub", None, _el(f"{{{NS}}}subscriptions", {"node": node}))
        reply = await self.conn.iq(self.service, "get", request)
        subs = reply.find(f"{{{NS}}}pubsub/{{{NS}}}subscriptions")
        if subs is None:
            return []
        return [(s.get("jid", ""), s.get("subscription", ""))
                for s in subs.findall(f"{{{NS}}}subscription")]

    async def subscribe(self, node: str, jid: str) -> None:
        """Subscribe ``jid`` unless it already is (ejabberd would add a second one)."""
        try:
            current = await self.subscriptions(node)
        except XmppRefused:
            current = []
        if any(j == jid and state == "subscribed" for j, state in current):
            return
        request = _el(f"{{{NS}}}pubsub", None,
                      _el(f"{{{NS}}}subscribe", {"node": node, "jid": jid}))
        await self.conn.iq(self.service, "set", request)
        log.info("subscribed %s to %s", jid, node)

    async def unsubscribe(self, node: str, jid: str) -> None:
        request = _el(f"{{{NS}}}pubsub", None,
                      _el(f"{{{NS}}}unsubscribe", {"node": node, "jid": jid}))
        await self.conn.iq(self.service, "set", request)

    # -- owner operations ---------------------------------------------------------
    async def default_config(self) -> dict[str, list[str]]:
        request = _el(f"{{{NS_OWNER}}}pubsub", None, _el(f"{{{NS_OWNER}}}default"))
        reply = await self.conn.iq(self.service, "get", request)
        return read_form(reply)

    async def node_config(self, node: str) -> dict[str, list[str]]:
        request = _el(f"{{{NS_OWNER}}}pubsub", None,
                      _el(f"{{{NS_OWNER}}}configure", {"node": node}))
        reply = await self.conn.iq(self.service, "get", request)
        return read_form(reply)

    async def create(self, node: str, config: Mapping[str, str | list[str]]) -> None:
        request = _el(f"{{{NS}}}pubsub", None, _el(f"{{{NS}}}create", {"node": node}),
                      _el(f"{{{NS}}}configure", None, data_form(config)))
        await self.conn.iq(self.service, "set", request)

    async def configure(self, node: str, config: Mapping[str, str | list[str]]) -> None:
        request = _el(f"{{{NS_OWNER}}}pubsub", None,
                      _el(f"{{{NS_OWNER}}}configure", {"node": node}, data_form(config)))
        await self.conn.iq(self.service, "set", request)

    async def affiliations(self, node: str) -> dict[str, str]:
        request = _el(f"{{{NS_OWNER}}}pubsub", None,
                      _el(f"{{{NS_OWNER}}}affiliations", {"node": node}))
        reply = await self.conn.iq(self.service, "get", request)
        affs = reply.find(f"{{{NS_OWNER}}}pubsub/{{{NS_OWNER}}}affiliations")
        if affs is None:
            return {}
        return {a.get("jid", ""): a.get("affiliation", "")
                for a in affs.findall(f"{{{NS_OWNER}}}affiliation")}

    async def set_affiliations(self, node: str, affiliations: Mapping[str, str]) -> None:
        children = [_el(f"{{{NS_OWNER}}}affiliation", {"jid": j, "affiliation": a})
                    for j, a in affiliations.items()]
        request = _el(f"{{{NS_OWNER}}}pubsub", None,
                      _el(f"{{{NS_OWNER}}}affiliations", {"node": node}, *children))
        await self.conn.iq(self.service, "set", request)

    async def delete(self, node: str) -> None:
        request = _el(f"{{{NS_OWNER}}}pubsub", None,
                      _el(f"{{{NS_OWNER}}}delete", {"node": node}))
        await self.conn.iq(self.service, "set", request)

    async def purge(self, node: str) -> None:
        request = _el(f"{{{NS_OWNER}}}pubsub", None,
                      _el(f"{{{NS_OWNER}}}purge", {"node": node}))
        await self.conn.iq(self.service, "set", request)

    async def retract(self, node: str, item_ids: Iterable[str]) -> None:
        children = [_el(f"{{{NS}}}item", {"id": i}) for i in item_ids]
        request = _el(f"{{{NS}}}pubsub", None,
                      _el(f"{{{NS}}}retract", {"node": node}, *children))
        await self.conn.iq(self.service, "set", request)
