"""The gateway against a real XMPP server: ingest, event status, SSE feeds, operations."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backchannel.config import Settings
from backchannel.errors import NotConnected
from backchannel.metrics import Metrics
from gateway.app import Gateway
from gateway.feeds import QUEUE_SIZE, Message
from gateway.problems import CONTENT_TYPE
from pubsub.client import PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import Event, from_element, make_event
from pubsub.publisher import Publisher
from tests.gateway_support import (
    BLOG,
    SHOP,
    STATIC,
    encode,
    event_doc,
    post_events,
    read_sse,
    signed,
    with_sites,
)
from workers.progress import StoreProgress
from workers.store import Store

pytestmark = pytest.mark.integration

Connect = Callable[..., Awaitable[XmppConnection]]


@pytest.fixture
def gw_settings(bootstrapped: Settings) -> Settings:
    return with_sites(bootstrapped, max_batch=10)


@pytest.fixture
async def gateway(gw_settings: Settings, connect: Connect) -> AsyncIterator[Gateway]:
    conn = await connect("gateway", "gw")
    async with Gateway(gw_settings, conn, metrics=Metrics(), static_dir=STATIC,
                       heartbeat=0.5) as gw:
        await asyncio.wait_for(gw.hub.subscribed.wait(), 10)
        yield gw


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def worker(gw_settings: Settings, connect: Connect) -> Publisher:
    conn = await connect("worker", "feeds")
    return Publisher(PubSub(conn, gw_settings.xmpp.pubsub_service))


async def stored(gateway: Gateway, node: str, item_id: str) -> Event | None:
    item = await gateway.pubsub.item(node, item_id)
    return None if item is None else from_element(item.payload, item_id=item_id)


# ---------------------------------------------------------------------------- ingest


async def test_one_event_is_stored_before_the_202(gateway: Gateway,
                                                  session: aiohttp.ClientSession) -> None:
    doc = event_doc()
    status, answer, _ = await post_events(session, gateway.url, doc)
    assert (status, answer) == (202, {"id": doc["id"]})
    event = await stored(gateway, gateway.settings.nodes.events, doc["id"])
    assert event is not None and event.to_dict() == doc


async def test_batch_object_and_array_keep_their_order(gateway: Gateway,
                                                       session: aiohttp.ClientSession) -> None:
    first = [event_doc() for _ in range(5)]
    second = [event_doc() for _ in range(4)]
    status, answer, _ = await post_events(session, gateway.url, {"events": first})
    assert (status, answer) == (202, {"ids": [d["id"] for d in first]})
    status, answer, _ = await post_events(session, gateway.url, second)
    assert (status, answer) == (202, {"ids": [d["id"] for d in second]})
    items = await gateway.pubsub.items(gateway.settings.nodes.events, max_items=9)
    assert [i.id for i in items] == [d["id"] for d in first + second]


async def test_bearer_token_and_cloudevents_media_type(gateway: Gateway,
                                                       session: aiohttp.ClientSession) -> None:
    doc = event_doc()
    status, answer, _ = await post_events(
        session, gateway.url, doc,
        headers={"Authorization": "Bearer shop-token",
                 "Content-Type": "application/cloudevents+json; charset=utf-8"})
    assert (status, answer) == (202, {"id": doc["id"]})


def problem_of(status: int, problem: Any, headers: Mapping[str, str], expected: int,
               kind: str) -> dict[str, Any]:
    assert status == expected, problem
    assert headers["Content-Type"].startswith(CONTENT_TYPE)
    assert problem["type"] == f"urn:backchannel:problem:{kind}", problem
    assert problem["status"] == expected
    assert problem["title"] and problem["detail"]
    return dict(problem)


@pytest.mark.security
async def test_each_refusal_has_its_status_and_a_specific_message(
        gateway: Gateway, session: aiohttp.ClientSession) -> None:
    url = gateway.url
    max_event = gateway.settings.max_event_bytes

    async def check(body: Any, expected: int, kind: str, **kw: Any) -> str:
        status, problem, headers = await post_events(session, url, body, **kw)
        return str(problem_of(status, problem, headers, expected, kind)["detail"])

    detail = await check(b'{"specversion": "1.0",', 400, "malformed-json")
    assert "not well-formed JSON" in detail and "line 1" in detail
    assert "not valid JSON" in await check(b'{"x": NaN}', 400, "malformed-json")
    assert "UTF-8" in await check(b'{"x": "\xff"}', 400, "malformed-json")

    raw = encode(event_doc())
    detail = await check(raw, 415, "unsupported-media-type",
                         headers=signed(raw, content_type="text/plain"))
    assert "application/json" in detail
    await check(raw, 415, "unsupported-media-type",
                headers=signed(raw, content_type="application/json; charset=latin-1"))

    detail = await check(event_doc(type="UserRegistered"), 422, "contract-violation")
    assert "'type'" in detail and "dotted lower-case" in detail
    doc = event_doc()
    del doc["id"]
    assert "missing required attribute 'id'" in await check(doc, 422, "contract-violation")
    assert "U+FFFF" in await check(event_doc(data={"x": "\uffff"}), 422, "contract-violation")
    assert "batch is empty" in await check({"events": []}, 422, "invalid-batch")
    assert "CloudEvent object" in await check(b'"just a string"', 422, "contract-violation")

    detail = await check(event_doc(source=BLOG.source), 403, "source-mismatch")
    assert BLOG.source in detail and "site 'shop'" in detail

    big = event_doc(data={"blob": "x" * max_event})
    assert f"limit is {max_event}" in await check(big, 413, "event-too-large")
    detail = await check([event_doc() for _ in range(11)], 413, "batch-too-large")
    assert "11 events; the limit is 10" in detail
    huge = b" " * (10 * max_event + 1)
    assert "limit is" in await check(huge, 413, "body-too-large")


async def test_one_bad_event_refuses_the_whole_batch_and_names_it(
        gateway: Gateway, session: aiohttp.ClientSession) -> None:
    batch = [event_doc(), event_doc(type="nope"), event_doc(source=BLOG.source), event_doc()]
    status, problem, headers = await post_events(session, gateway.url, {"events": batch})
    problem_of(status, problem, headers, 422, "contract-violation")
    assert problem["detail"].startswith("events[1]: ")
    assert [(e["index"], e["status"]) for e in problem["errors"]] == [(1, 422), (2, 403)]
    for doc in batch:
        assert await stored(gateway, gateway.settings.nodes.events, doc["id"]) is None


async def test_duplicate_ids_in_a_batch(gateway: Gateway,
                                        session: aiohttp.ClientSession) -> None:
    doc = event_doc()
    status, problem, headers = await post_events(session, gateway.url, [doc, dict(doc)])
    problem_of(status, problem, headers, 422, "duplicate-id")


async def test_a_batch_cut_short_says_which_ids_were_stored(
        gateway: Gateway, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing real makes the server fail the third of five publishes; stand in for it.
    real = gateway.publisher.publish
    calls = 0

    async def flaky(node: str, event: Event, **kw: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise NotConnected("the XMPP connection dropped before the server answered")
        return await real(node, event, **kw)

    monkeypatch.setattr(gateway.publisher, "publish", flaky)
    batch = [event_doc() for _ in range(5)]
    status, problem, headers = await post_events(session, gateway.url, {"events": batch})
    problem_of(status, problem, headers, 503, "xmpp-unavailable")
    assert headers["Retry-After"].isdigit()
    ids = [d["id"] for d in batch]
    assert problem["not_stored"] == [ids[2]] and problem["unknown"] == []
    assert problem["stored"] == ids[:2] + ids[3:]
    for event_id in problem["stored"]:
        assert await stored(gateway, gateway.settings.nodes.events, event_id) is not None


async def test_metrics_count_requests_latency_and_published_events(
        gateway: Gateway, session: aiohttp.ClientSession) -> None:
    await post_events(session, gateway.url, [event_doc(), event_doc()])
    await post_events(session, gateway.url, b"{")
    async with session.get(f"{gateway.url}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await r.text()
    assert 'backchannel_ingest_requests_total{status="202"} 1' in text
    assert 'backchannel_ingest_requests_total{status="400"} 1' in text
    assert "backchannel_ingest_events_published_total 2" in text
    assert "backchannel_ingest_latency_seconds_count 2" in text
    assert "# TYPE backchannel_ingest_latency_seconds histogram" in text


# ---------------------------------------------------------------------------- event status


async def get_status(session: aiohttp.ClientSession, gateway: Gateway, event_id: str,
                     site: Any = SHOP) -> tuple[int, Any]:
    async with session.get(f"{gateway.url}/v1/events/{event_id}",
                           headers=signed(b"", site, content_type=None)) as r:
        return r.status, await r.json(content_type=None)


@pytest.mark.security
async def test_event_status_follows_the_nodes(gateway: Gateway, session: aiohttp.ClientSession,
                                              worker: Publisher, tmp_path: Path) -> None:
    nodes = gateway.settings.nodes
    done, dead, waiting = event_doc(), event_doc(), event_doc()
    status, _, _ = await post_events(session, gateway.url, [done, dead, waiting])
    assert status == 202

    assert await get_status(session, gateway, waiting["id"]) == (
        200, {"id": waiting["id"], "type": "user.registered", "state": "received"})

    result = {"status": "done", "tasks": {"geocode": {"status": "ok", "city": "Burbank"}}}
    await worker.publish(nodes.results, make_event(
        "backchannel.result", "urn:backchannel:worker", result, subject=done["id"],
        id=done["id"]))
    status, answer = await get_status(session, gateway, done["id"])
    assert status == 200 and answer["state"] == "done" and answer["result"] == result

    reason = {"reason": "geocode failed 5 times", "last_error": "timeout", "attempts": 5}
    await worker.publish(nodes.deadletters, make_event(
        "backchannel.deadletter", "urn:backchannel:worker", reason, subject=dead["id"],
        id=dead["id"]))
    status, answer = await get_status(session, gateway, dead["id"])
    assert status == 200 and answer["state"] == "dead-lettered"
    assert answer["deadletter"] == reason

    # The worker has taken `waiting` (its store, read-only, says pending): in progress.
    store = Store(tmp_path / "worker.sqlite")
    progress = StoreProgress(tmp_path / "worker.sqlite")
    gateway.ops.progress = progress
    try:
        assert await get_status(session, gateway, waiting["id"]) == (
            200, {"id": waiting["id"], "type": "user.registered", "state": "received"})
        store.accept(waiting["id"], "user.registered", waiting["source"], waiting,
                     [("geocode", "geocoder"), ("crm", "crm")])
        store.task_finished(waiting["id"], "geocode", ok=True, attempts=1, result={},
                            error=None, started=time.time(), duration_ms=1.0, next_at=None)
        status, answer = await get_status(session, gateway, waiting["id"])
        assert status == 200 and answer["state"] == "in progress", answer
        assert answer["tasks"] == [{"task": "crm", "state": "pending", "attempts": 0},
                                   {"task": "geocode", "state": "ok", "attempts": 1}]
        # The nodes' word wins: a result on the results node means done.
        store.accept(done["id"], "user.registered", done["source"], done, [("crm", "crm")])
        assert (await get_status(session, gateway, done["id"]))[1]["state"] == "done"
    finally:
        progress.close()
        store.close()

    # Another site, an unknown id, a malformed id: all the same 404.
    for event_id, site in ((done["id"], BLOG), ("01NOSUCHEVENT", SHOP), ("-bad id", SHOP)):
        status, problem = await get_status(session, gateway, event_id, site)
        assert status == 404 and problem["type"].endswith("unknown-event"), event_id


# ---------------------------------------------------------------------------- feeds


async def publish_feed(worker: Publisher, node: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        event = make_event("feed.signup", "urn:backchannel:worker",
                           {"name": f"user {i}", "latitude": 34.1, "longitude": -118.3})
        await worker.publish(node, event)
        ids.append(event.id)
    return ids


async def test_feed_starts_with_the_last_20_items_then_goes_live(
        gateway: Gateway, session: aiohttp.ClientSession, worker: Publisher) -> None:
    node = gateway.settings.nodes.feed("signups")
    history = await publish_feed(worker, node, 25)
    async with session.get(f"{gateway.url}/v1/feeds/signups") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        replay = await read_sse(r, 20)
        assert [i for i, _ in replay] == history[-20:]
        assert replay[-1][1]["data"]["name"] == "user 24"
        live = await publish_feed(worker, node, 3)
        assert [i for i, _ in await read_sse(r, 3)] == live


async def test_resume_with_last_event_id_misses_nothing(
        gateway: Gateway, session: aiohttp.ClientSession, worker: Publisher) -> None:
    node = gateway.settings.nodes.feed("activity")
    await publish_feed(worker, node, 3)
    async with session.get(f"{gateway.url}/v1/feeds/activity") as r:
        await read_sse(r, 3)
        seen = await publish_feed(worker, node, 5)
        got = await read_sse(r, 5)
        assert [i for i, _ in got] == seen
    last = got[-1][0]

    # Disconnected; events keep coming, then the client comes back while more arrive.
    missed = await publish_feed(worker, node, 30)
    publishing = asyncio.ensure_future(publish_feed(worker, node, 20))
    try:
        async with session.get(f"{gateway.url}/v1/feeds/activity",
                               headers={"Last-Event-ID": last}) as r:
            later = await publishing
            got = await read_sse(r, 50)
            assert [i for i, _ in got] == missed + later
            # Nothing more, not even a duplicate: the next message is a fresh one.
            fresh = await publish_feed(worker, node, 1)
            assert [i for i, _ in await read_sse(r, 1)] == fresh
    finally:
        if not publishing.done():
            publishing.cancel()

    # The query parameter works too (for clients that cannot set headers).
    async with session.get(f"{gateway.url}/v1/feeds/activity",
                           params={"last_event_id": missed[-1]}) as r:
        assert [i for i, _ in await read_sse(r, 21)] == later + fresh


async def test_unknown_feed_is_a_404_problem(gateway: Gateway,
                                             session: aiohttp.ClientSession) -> None:
    async with session.get(f"{gateway.url}/v1/feeds/secrets") as r:
        assert r.status == 404
        problem = await r.json(content_type=None)
    assert problem["type"].endswith("unknown-feed") and problem["feeds"] == [
        "activity", "signups"]


async def test_heartbeat_comments_keep_the_stream_alive(
        gateway: Gateway, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{gateway.url}/v1/feeds/signups") as r:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(r.content.readline(), 5)
            if line == b": ping\n":
                break
        else:
            raise AssertionError("no heartbeat within 5 s (interval is 0.5 s)")


async def test_a_slow_client_is_dropped_and_others_keep_going(gateway: Gateway) -> None:
    # A real slow browser is hard to make (socket buffers absorb megabytes), so the
    # hub's fan-out is driven directly.
    slow, fast = gateway.hub.add("signups"), gateway.hub.add("signups")
    try:
        for n in range(QUEUE_SIZE + 1):
            gateway.hub._push("signups", Message(f"m{n}", b""))
            if not fast.queue.empty():
                fast.queue.get_nowait()
        assert slow.dropped.is_set() and not fast.dropped.is_set()
        assert gateway.metrics.value("backchannel_sse_dropped_total", {"feed": "signups"}) == 1
    finally:
        gateway.hub.remove(slow)
        gateway.hub.remove(fast)


# ---------------------------------------------------------------------------- operations


async def test_health_readiness_status_and_dashboard(
        gateway: Gateway, session: aiohttp.ClientSession) -> None:
    url = gateway.url
    async with session.get(f"{url}/healthz") as r:
        assert r.status == 200
    async with session.get(f"{url}/readyz") as r:
        assert r.status == 200 and (await r.json())["xmpp"] == "connected"
    async with session.get(f"{url}/v1/status") as r:
        status = await r.json()
    assert status["components"]["gateway"]["state"] == "running"
    assert status["components"]["xmpp"]["state"] == "running"
    async with session.get(f"{url}/") as r:
        assert r.status == 200 and "<html" in (await r.text()).lower()
    for path in ("/dashboard.js", "/static/dashboard.js", "/vendor/d3-geo.min.js",
                 "/static/vendor/countries-110m.json"):
        async with session.get(url + path) as r:
            assert r.status == 200, path
    for path in ("/../pyproject.toml", "/%2e%2e/pyproject.toml", "/nothing-here"):
        async with session.get(url + path) as r:
            assert r.status == 404, path


async def test_status_provider_and_readiness_without_xmpp(
        gw_settings: Settings, session: aiohttp.ClientSession) -> None:
    async def provider() -> Mapping[str, Any]:
        return {"components": {"worker": {"state": "running", "detail": "ok"}},
                "deadletters": 3}

    from backchannel.config import Account, Secret

    conn = XmppConnection(gw_settings.xmpp, Account("gateway@localhost", Secret("x")))
    try:
        async with Gateway(gw_settings, conn, metrics=Metrics(),
                           status_provider=provider) as gw:
            async with session.get(f"{gw.url}/readyz") as r:
                assert r.status == 503
            async with session.get(f"{gw.url}/v1/status") as r:
                status = await r.json()
    finally:
        await conn.close()
    assert status["deadletters"] == 3
    assert status["components"]["worker"]["state"] == "running"
    assert status["components"]["gateway"]["state"] == "degraded"
    assert json.dumps(status)
