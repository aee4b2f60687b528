"""The worker pipeline end to end: events in, results, feeds and callbacks out.

Outside services are real aiohttp servers on port 0 (simulator.services), the site that
receives callbacks is the simulator's demo site, and the XMPP server is the managed one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from backchannel.localserver import ServerState
from pubsub.client import PubSub
from pubsub.envelope import JSON_NS, make_event
from simulator.chaos import Chaos
from simulator.stack import SITE_SOURCE
from tests.pipeline_harness import Pipeline, start_worker, stop_worker, wait_until
from workers.worker import Worker

pytestmark = pytest.mark.integration

FIXED = {
    "Paris, France": ("Paris", "FR"),
    "Toronto, ON, Canada": ("Toronto", "CA"),
    "München, Germany": ("Munich", "DE"),
    "Osaka, Japan": ("Osaka", "JP"),
    "Springfield, IL, USA": ("Springfield", "US"),
}


def finished(worker: Worker) -> int:
    counts = worker.store.counts()
    return counts.get("done", 0) + counts.get("failed", 0)


async def test_500_registrations_give_500_results_and_callbacks_applied_once(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    async with Pipeline(server_state, tmp_path, geocoder="offline") as p:
        conn, worker = await start_worker(p)
        events = p.registrations(500, list(FIXED))
        await p.publish_many(events)
        await wait_until(lambda: finished(worker) == 500, 120, "500 finished events")
        await p.site.wait_for(500, timeout=60)
        assert await worker.outbox.flush(30)

        assert worker.store.counts() == {"done": 500}
        assert len(p.site.applied) == 500
        assert set(p.site.applied) == {e.id for e in events}
        # Geocodes are right for the fixed addresses.
        for event in events[:10]:
            geo = next(t for t in worker.store.tasks(event.id) if t.task == "geocode").result
            city, cc = FIXED[event.data["address"]]
            assert (geo["city"], geo["country_code"]) == (city, cc), geo
        # One result per event on the results node, the event id as item id.
        results = await worker.pubsub.items(p.settings.nodes.results, max_items=1000)
        assert {i.id for i in results} == {e.id for e in events}
        signups = await worker.pubsub.items(p.settings.nodes.feed("signups"), max_items=1000)
        assert len(signups) == 500
        assert "example.com" not in (signups[0].payload.text or "")  # no email in the feed
        crm_records = p.services.crm.stats
        assert crm_records.successes >= 500
        await stop_worker(conn, worker)


async def test_half_failing_service_still_completes_every_event(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    async with Pipeline(server_state, tmp_path, max_attempts=12) as p:
        p.services.crm.control.set(Chaos(error_rate=0.5))
        conn, worker = await start_worker(p)
        events = p.registrations(200, list(FIXED))
        await p.publish_many(events)
        await wait_until(lambda: finished(worker) == 200, 120, "200 finished events")
        assert worker.store.counts() == {"done": 200}
        attempts = [t.attempts for e in events for t in worker.store.tasks(e.id)
                    if t.task == "crm"]
        assert sum(attempts) > 250, "half the CRM calls failed, so retries must show"
        assert max(attempts) >= 2
        await p.site.wait_for(200, timeout=60)
        await stop_worker(conn, worker)


async def test_dead_service_dead_letters_while_others_finish_and_breaker_limits_calls(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    async with Pipeline(server_state, tmp_path, max_attempts=4) as p:
        p.services.lists.control.set(Chaos(down=True))
        conn, worker = await start_worker(p)
        events = p.registrations(200, list(FIXED))
        await p.publish_many(events)

        def other_tasks_ok() -> bool:
            return all(t.state == "ok" for e in events for t in worker.store.tasks(e.id)
                       if t.task != "mailing_list")

        await wait_until(other_tasks_ok, 60, "geocode and crm to finish")
        # A scrape sees the open breaker and the waiting events without anyone asking
        # for `status` first (the gauges are collected at render time).
        scrape = worker.metrics.render()
        assert 'backchannel_breaker_open{service="mailing_list"} 1' in scrape, scrape
        assert 'backchannel_breaker_open{service="crm"} 0' in scrape
        depth = worker.metrics.value("backchannel_queue_depth")
        assert 0 < depth <= 200, depth
        await wait_until(lambda: finished(worker) == 200, 120, "all events to end")
        assert worker.store.counts() == {"failed": 200}
        worker.metrics.render()
        assert worker.metrics.value("backchannel_queue_depth") == 0
        dead = worker.store.deadletters(limit=1000)
        assert len(dead) == 200
        assert all("mailing_list failed after 4 attempts" in d.reason for d in dead)
        calls = p.services.lists.stats.calls
        # Without a breaker: 200 events x 4 attempts = 800 calls.
        assert calls < 200, f"breaker should keep calls to a dead service low, saw {calls}"
        assert worker.lanes["mailing_list"].breaker.opened_count >= 1
        # The site still hears about every event (with the failed task in the result).
        await p.site.wait_for(200, timeout=60)
        assert await worker.outbox.flush(30)
        dl_items = await worker.pubsub.items(p.settings.nodes.deadletters, max_items=1000)
        assert len(dl_items) == 200
        await stop_worker(conn, worker)


async def test_malformed_and_unknown_events_become_dead_letters(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    from xml.etree import ElementTree as ET

    async with Pipeline(server_state, tmp_path) as p:
        conn, worker = await start_worker(p)
        ps = PubSub(p.site_conn, p.settings.xmpp.pubsub_service)
        bad = ET.Element(f"{{{JSON_NS}}}json")
        bad.text = "{not json"
        await ps.publish(p.settings.nodes.events, "broken1", bad)
        stranger = make_event("user.registered", "https://evil.example.net", {"name": "x"})
        await p.publisher.publish(p.settings.nodes.events, stranger)
        unknown = make_event("order.shipped", SITE_SOURCE, {"order": 1})
        await p.publisher.publish(p.settings.nodes.events, unknown)
        good = p.registrations(1, prefix="good")[0]
        await p.publisher.publish(p.settings.nodes.events, good)
        await wait_until(lambda: finished(worker) == 1, 30, "the good event")
        await wait_until(lambda: len(worker.store.deadletters()) == 3, 30, "3 dead letters")
        reasons = {d.event_id: d.reason for d in worker.store.deadletters()}
        assert "not well-formed JSON" in reasons["broken1"]
        assert "not a registered site" in reasons[stranger.id]
        assert "no route for event type 'order.shipped'" in reasons[unknown.id]
        assert conn.ready.is_set()
        await stop_worker(conn, worker)


async def test_xmpp_server_restart_mid_stream_loses_nothing(
    server_state: ServerState, bootstrapped: Any, managed: Any, tmp_path: Path
) -> None:
    """The server goes away with work in flight and comes back: every event completes."""
    from backchannel.errors import NotConnected, XmppTimeout

    async with Pipeline(server_state, tmp_path, geocoder="offline") as p:
        conn, worker = await start_worker(p)
        before = p.registrations(150, list(FIXED), prefix="pre")
        await p.publish_many(before)
        # Restart while the worker is still busy with (some of) them.
        await asyncio.to_thread(managed.stop)
        await asyncio.to_thread(managed.start)
        after = p.registrations(150, list(FIXED), prefix="post")
        for event in after:
            for _ in range(100):  # the site retries until its connection is back
                try:
                    await p.publisher.publish(p.settings.nodes.events, event, wait_connected=10)
                    break
                except (NotConnected, XmppTimeout):
                    await asyncio.sleep(0.1)
        try:
            await wait_until(lambda: finished(worker) == 300, 120,
                             "all 300 events after restart")
        except AssertionError as exc:  # say where the missing events are stuck
            ids = [e.id for e in before + after]
            unknown = [i for i in ids if worker.store.event(i) is None]
            raise AssertionError(
                f"{exc}: states {worker.store.counts()}, {len(unknown)} never taken in, "
                f"consumer {worker.consumer.stats}, outbox {worker.store.outbox_size()}, "
                f"worker sessions {conn.sessions}") from None
        await p.site.wait_for(300, timeout=90)
        assert await worker.outbox.flush(60)
        assert worker.store.counts() == {"done": 300}
        assert conn.drops >= 1 and conn.ready.is_set()
        results = await worker.pubsub.items(p.settings.nodes.results, max_items=1000)
        assert {i.id for i in results} == {e.id for e in before + after}
        await stop_worker(conn, worker)


async def test_dead_letters_retried_after_the_service_recovers_and_replay(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    import time

    async with Pipeline(server_state, tmp_path, max_attempts=2) as p:
        p.services.lists.control.set(Chaos(down=True))
        conn, worker = await start_worker(p)
        events = p.registrations(20, list(FIXED), prefix="dl")
        await p.publish_many(events)
        await wait_until(lambda: worker.store.counts().get("failed", 0) == 20, 60,
                         "20 dead-lettered events")
        assert len(worker.store.deadletters()) == 20
        # The mailing list comes back; an operator retries everything.
        p.services.lists.control.set(Chaos())
        calls_before = p.services.crm.stats.calls
        assert worker.retry_all_deadletters() == 20
        await wait_until(lambda: worker.store.counts() == {"done": 20}, 60, "retried events")
        assert worker.store.deadletters() == []
        assert len(worker.store.deadletters(state="retried")) == 20
        # Only the dead task ran again: the CRM was not called for the retried events.
        assert p.services.crm.stats.calls == calls_before
        assert worker.retry_all_deadletters() == 0  # nothing left to retry
        # Replay runs every task of the events received since a time, once more.
        assert worker.replay(time.time() - 3600, "user.*") == 20
        await wait_until(lambda: worker.store.counts() == {"done": 20}
                         and p.services.crm.stats.calls >= calls_before + 20, 60,
                         "replayed events")
        ok_crm = [t for e in events for t in worker.store.tasks(e.id) if t.task == "crm"]
        assert all(t.state == "ok" for t in ok_crm)
        await stop_worker(conn, worker)
