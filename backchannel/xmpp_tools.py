"""Short-lived XMPP sessions behind CLI commands: bootstrap, publish one event, tail a node."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from xml.etree import ElementTree as ET

from backchannel.config import Settings
from backchannel.errors import EventError
from pubsub.client import NS_EVENT, Item, PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import Event, from_element
from pubsub.nodes import NodeReport, bootstrap
from pubsub.publisher import Publisher


async def bootstrap_nodes(settings: Settings) -> list[NodeReport]:
    async with XmppConnection(settings.xmpp, settings.account("admin"),
                              resource=f"bootstrap-{os.getpid()}") as conn:
        return await bootstrap(PubSub(conn, settings.xmpp.pubsub_service), settings)


async def publish_one(settings: Settings, account: str, node: str, event: Event) -> str:
    async with XmppConnection(settings.xmpp, settings.account(account),
                              resource=f"cli-{os.getpid()}") as conn:
        publisher = Publisher(PubSub(conn, settings.xmpp.pubsub_service),
                              max_bytes=settings.max_event_bytes)
        return await publisher.publish(node, event)


def format_item(item: Item, as_json: bool, max_bytes: int) -> str:
    try:
        event = from_element(item.payload, item_id=item.id, max_bytes=max_bytes)
    except EventError as exc:
        if as_json:
            return json.dumps({"item": item.id, "invalid": str(exc)})
        return f"{item.id}  INVALID: {exc}"
    if as_json:
        return event.to_json()
    data = json.dumps(event.data, ensure_ascii=False)
    if len(data) > 160:
        data = data[:157] + "..."
    return f"{event.time or '-'}  {event.type:<24} {event.id}  {event.source}  {data}"


async def tail(settings: Settings, account: str, node: str, *, as_json: bool, last: int,
               count: int) -> None:
    """Print the last retained items, then live items until interrupted (or ``count``)."""
    queue: asyncio.Queue[Item] = asyncio.Queue()

    def on_items(message: ET.Element) -> None:
        items = message.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items")
        if items is None or items.get("node") != node:
            return
        for element in items.findall(f"{{{NS_EVENT}}}item"):
            children = list(element)
            queue.put_nowait(Item(element.get("id", ""), children[0] if children else None))

    conn = XmppConnection(settings.xmpp, settings.account(account),
                          resource=f"tail-{os.getpid()}")
    conn.on_message(f"{{jabber:client}}message/{{{NS_EVENT}}}event/{{{NS_EVENT}}}items",
                    on_items, name="tail")
    await conn.start()
    ps = PubSub(conn, settings.xmpp.pubsub_service)
    try:
        # A full-JID subscription: it ends with this session and never reaches other clients.
        await ps.subscribe(node, conn.jid)
        # On stderr, so stdout stays one item per line; tells a person (or a script
        # waiting for it) that nothing published from now on will be missed.
        print(f"tailing {node} as {conn.jid} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        shown: set[str] = set()
        if last:
            for item in (await ps.items(node, max_items=last))[-last:]:
                shown.add(item.id)
                print(format_item(item, as_json, settings.max_event_bytes), flush=True)
        seen = 0
        while not count or seen < count:
            item = await queue.get()
            if item.id and item.id in shown:  # published between subscribe and the read-back
                shown.discard(item.id)
                continue
            print(format_item(item, as_json, settings.max_event_bytes), flush=True)
            seen += 1
    finally:
        try:
            await ps.unsubscribe(node, conn.jid)
        except Exception as exc:  # leaving anyway; the subscription ends with the session
            print(f"(unsubscribe failed: {exc})", file=sys.stderr)
        await conn.close()
