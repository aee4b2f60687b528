"""After an outage, held-back work runs as soon as the service (or site) answers again.

Backoff protects a service that is down; once it is back, making each task wait out its
own (by then minutes-long) delay only delays the sites. These tests give the tasks a 60 s
backoff, so nothing would finish within the test's few seconds unless the lane makes
the waiting tasks due when the breaker closes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from backchannel.config import ServiceSettings
from backchannel.errors import TemporaryTaskError
from backchannel.localserver import ServerState
from backchannel.metrics import Metrics
from pubsub.envelope import Event, make_event
from simulator.chaos import Chaos
from tests.pipeline_harness import Pipeline, start_worker, stop_worker, wait_until
from workers.lanes import Lane
from workers.store import Store


class SwitchableService:
    """A task plug-in whose service is up or down (the real plug-in interface)."""

    name = "crm"
    service = "crm"

    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    async def run(self, event: Event) -> Mapping[str, Any]:
        self.calls += 1
        if not self.up:
            raise TemporaryTaskError("crm: HTTP 503")
        return {"contact": event.id}

    async def aclose(self) -> None:
        return None


async def test_tasks_held_back_by_backoff_run_when_the_service_is_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "worker.sqlite")
    events = {e.id: e for e in (make_event("user.registered", "https://shop.example.com",
                                           {"n": i}) for i in range(20))}
    for e in events.values():
        store.accept(e.id, e.type, e.source, {}, [("crm", "crm")])
    service = SwitchableService()
    settings = ServiceSettings(name="crm", concurrency=4, max_attempts=10,
                               backoff_initial=60.0, backoff_max=300.0,
                               breaker_threshold=3, breaker_reset=0.3)
    done: list[str] = []
    lane = Lane(service, settings, store, Metrics(), done.append, events.get)
    lane.start()
    try:
        deadline = time.monotonic() + 10
        while lane.breaker.opened_count < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert lane.breaker.opened_count >= 1
        waiting = [t for e in events for t in store.tasks(e) if t.attempts > 0]
        assert waiting, "some tasks should have failed and be waiting for a retry"
        assert all(t.state == "pending" for e in events for t in store.tasks(e))

        service.up = True  # the outage ends; the next half-open probe succeeds
        back = time.monotonic()
        while len(done) < len(events) and time.monotonic() - back < 10:
            await asyncio.sleep(0.05)
        assert len(done) == len(events), f"{len(done)} of {len(events)} finished"
        assert all(t.state == "ok" for e in events for t in store.tasks(e))
        # Without the expedite, tasks that failed once wait 30-60 s (backoff 60 s, jitter).
        assert time.monotonic() - back < 10
    finally:
        await lane.close(grace=1)
        store.close()


@pytest.mark.integration
async def test_callbacks_held_back_by_a_site_outage_go_out_when_it_answers_again(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    async with Pipeline(server_state, tmp_path) as p:
        # The real callback schedule, doubled: a failed first attempt waits 8-12 s.
        settings = replace(p.settings, worker=replace(p.settings.worker,
                                                      callback_time_scale=2.0))
        conn, worker = await start_worker(p, settings)
        try:
            p.site.control.set(Chaos(down=True))
            first = p.registrations(10, prefix="held")
            await p.publish_many(first)

            def all_failed_once() -> bool:
                rows = [worker.store.callback(e.id) for e in first]
                return all(r is not None and r.attempts >= 1 and r.state == "pending"
                           for r in rows)

            await wait_until(all_failed_once, 30, "every callback to fail once")
            assert len(p.site.applied) == 0
            p.site.control.set(Chaos())  # the site is back
            back = time.monotonic()
            await p.publish_many(p.registrations(1, prefix="fresh"))
            await p.site.wait_for(11, timeout=20)
            took = time.monotonic() - back
            # The first ten were due again only 8-12 s after their failure.
            assert took < 6.0, f"held-back callbacks took {took:.1f} s after the site returned"
            assert p.site.duplicates == 0
        finally:
            await stop_worker(conn, worker)
