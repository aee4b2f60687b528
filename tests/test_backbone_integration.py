"""The backbone against a real XMPP server: publish, consume exactly once, survive drops.

An event published is handed to the consumer's handler once and only once, although the
consumer's socket is cut mid-stream and, separately, the consumer is thrown away and
rebuilt from its durable store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from backchannel.config import Settings
from backchannel.errors import EventError, XmppRefused
from pubsub.client import PubSub
from pubsub.connection import XmppConnection
from pubsub.consumer import Consumer
from pubsub.envelope import JSON_NS, Event, make_event
from pubsub.publisher import Publisher
from pubsub.seen import SeenStore

pytestmark = pytest.mark.integration


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Recorder:
    """A handler that remembers every event id it was handed, across consumer instances."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def __call__(self, event: Event) -> None:
        self.ids.append(event.id)


async def start_consumer(settings: Settings, node: str, store_path: Path, handler: Any,
                         resource: str, **kw: Any) -> tuple[XmppConnection, Consumer]:
    conn = XmppConnection(settings.xmpp, settings.account("worker"), resource=resource)
    consumer = Consumer(conn, PubSub(conn, settings.xmpp.pubsub_service), node,
                        SeenStore(store_path), handler, **kw)
    await consumer.start()
    await conn.start()
    await asyncio.wait_for(consumer.caught_up.wait(), 30)
    return conn, consumer


async def fresh_node(settings: Settings, name: str) -> str:
    """A node of our own for one test, configured like the events node."""
    from pubsub.nodes import bootstrap_node, desired_config

    async with XmppConnection(settings.xmpp, settings.account("admin"), resource="t") as admin:
        ps = PubSub(admin, settings.xmpp.pubsub_service)
        with contextlib.suppress(XmppRefused):
            await ps.delete(name)
        wanted = desired_config(settings.nodes, settings.nodes.events)
        wanted["pubsub#access_model"] = "open"
        report = await bootstrap_node(
            ps, name, wanted, None,
            {settings.account("gateway").bare: "publisher",
             settings.account("worker").bare: "publisher"},
        )
        assert report.action == "created", report.lines()
    return name


async def test_thousand_events_exactly_once_across_cut_and_rebuild(
    bootstrapped: Settings, connect: Any, tmp_path: Path
) -> None:
    settings = bootstrapped
    node = await fresh_node(settings, "test.exactly-once")
    store_path = tmp_path / "seen.sqlite"
    recorder = Recorder()
    conn, consumer = await start_consumer(settings, node, store_path, recorder, "c1")

    publisher_conn = await connect("gateway", "pub")
    publisher = Publisher(PubSub(publisher_conn, settings.xmpp.pubsub_service))
    sent: list[str] = []
    semaphore = asyncio.Semaphore(20)

    async def send(i: int) -> None:
        async with semaphore:
            event = make_event("user.registered", "https://shop.example.com", {"n": i})
            await publisher.publish(node, event)
            sent.append(event.id)

    # First third, then cut the consumer's socket without warning.
    await asyncio.gather(*(send(i) for i in range(333)))
    drops_before = conn.drops
    conn.cut()
    await asyncio.gather(*(send(i) for i in range(333, 666)))
    await wait_for(lambda: conn.drops > drops_before and conn.ready.is_set(), 30,
                   "the consumer to reconnect")
    await wait_for(lambda: len(recorder.ids) >= 666, 30, "events after reconnect")

    # Throw the consumer away; a new one rebuilds from the durable store alone.
    await consumer.close()
    await conn.close()
    await asyncio.gather(*(send(i) for i in range(666, 1000)))
    conn2, consumer2 = await start_consumer(settings, node, store_path, recorder, "c2")
    await wait_for(lambda: len(set(recorder.ids)) >= 1000, 60, "all 1000 events")
    await consumer2.idle()

    counts = Counter(recorder.ids)
    assert set(counts) == set(sent)
    assert len(sent) == 1000
    duplicates = {i: n for i, n in counts.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} events handed over more than once"
    # The rebuilt consumer found what was published while nobody listened by catch-up.
    assert consumer2.stats.caught_up >= 334
    assert conn.sessions >= 2  # the cut led to a second session, not a silent stall
    await consumer2.close()
    await conn2.close()


async def test_malformed_items_are_reported_and_never_stop_the_consumer(
    bootstrapped: Settings, connect: Any, tmp_path: Path
) -> None:
    settings = bootstrapped
    node = await fresh_node(settings, "test.malformed")
    invalid: list[tuple[str, str]] = []

    async def on_invalid(item_id: str, raw: str, error: EventError) -> None:
        invalid.append((item_id, str(error)))

    recorder = Recorder()
    conn, consumer = await start_consumer(settings, node, tmp_path / "s.sqlite", recorder,
                                          "m", on_invalid=on_invalid,
                                          max_bytes=settings.max_event_bytes)
    pub_conn = await connect("gateway", "raw")
    ps = PubSub(pub_conn, settings.xmpp.pubsub_service)

    def json_payload(text: str) -> ET.Element:
        element = ET.Element(f"{{{JSON_NS}}}json")
        element.text = text
        return element

    other = ET.Element("{urn:example:other}thing")
    other.text = "hello"
    big = '{"specversion":"1.0","id":"big1","source":"s","type":"a.b","data":"' + \
        "x" * 200_000 + '"}'
    await ps.publish(node, "notjson", json_payload("this is { not json"))
    await ps.publish(node, "noid", json_payload('{"specversion":"1.0","source":"s","type":"a.b"}'))
    await ps.publish(node, "notype", json_payload('{"specversion":"1.0","id":"notype",'
                                                  '"source":"s"}'))
    await ps.publish(node, "wrongns", other)
    await ps.publish(node, "mismatch", json_payload(make_event("a.b", "s").to_json()))
    try:
        await ps.publish(node, "big1", json_payload(big))
        expect_big = True
    except XmppRefused:
        expect_big = False  # the server refused the stanza itself: also fine
    good = make_event("user.registered", "https://shop.example.com", {"ok": True})
    await Publisher(ps).publish(node, good)

    await wait_for(lambda: good.id in recorder.ids, 20, "the valid event after bad ones")
    messages = dict(invalid)
    assert "not well-formed JSON" in messages["notjson"]
    assert "missing required attribute 'id'" in messages["noid"]
    assert "missing required attribute 'type'" in messages["notype"]
    assert "expected <json" in messages["wrongns"]
    assert "differs from event id" in messages["mismatch"]
    if expect_big:
        assert "limit is" in messages["big1"]
    assert recorder.ids == [good.id]
    assert conn.ready.is_set()
    await consumer.close()
    await conn.close()


async def test_gap_is_warned_when_node_lost_items_since_checkpoint(
    bootstrapped: Settings, connect: Any, tmp_path: Path
) -> None:
    settings = bootstrapped
    node = await fresh_node(settings, "test.gap")
    store_path = tmp_path / "gap.sqlite"
    recorder = Recorder()
    conn, consumer = await start_consumer(settings, node, store_path, recorder, "g1")
    pub_conn = await connect("gateway", "gap")
    ps = PubSub(pub_conn, settings.xmpp.pubsub_service)
    publisher = Publisher(ps)
    first = make_event("user.registered", "s", {})
    await publisher.publish(node, first)
    await wait_for(lambda: first.id in recorder.ids, 10, "first event")
    await consumer.close()
    await conn.close()

    # While away: the node loses everything we saw (purged), new items arrive.
    async with XmppConnection(settings.xmpp, settings.account("admin"), resource="p") as admin:
        await PubSub(admin, settings.xmpp.pubsub_service).purge(node)
    later = make_event("user.registered", "s", {})
    await publisher.publish(node, later)
    conn2, consumer2 = await start_consumer(settings, node, store_path, recorder, "g2")
    await wait_for(lambda: later.id in recorder.ids, 10, "later event")
    assert consumer2.stats.gaps == 1
    assert "no longer holds" in consumer2.gap_warnings[0]
    await consumer2.close()
    await conn2.close()
