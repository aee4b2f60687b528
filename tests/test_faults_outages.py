"""Each outside service, and the callback site, down for a minute (a few seconds in CI).

Events flow at a steady rate before, during and after the outage; the worker runs the
default retry policy (ServiceSettings' defaults, its times compressed by outage/60 in
CI, so a CI run is a scaled copy of the long one). What must hold: nothing accepted is
lost, nothing done twice, each event ends done or dead-lettered with a reason, the other
services are not held up, and once the service is back the worker uses it again on its
own. The recovery time is from "service back" to its first successful call (services)
or to the last held-back callback applied (site).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from backchannel.localserver import ServerState
from backchannel.localserver.base import free_port
from simulator.chaos import Chaos
from simulator.demosite import DemoSite
from simulator.httpfake import CallRecord
from simulator.stack import WEBHOOK_SECRET
from tests.fault_support import (
    CALLBACK_CONCURRENCY,
    SteadyPublisher,
    WorkerProcess,
    check_ledger,
    fault_record,
    production_retry,
    read_store,
    registrations,
    retune,
    settle,
)
from tests.pipeline_harness import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.fault]

RATE = 20.0  # events per second, the steady load


def outage_seconds(long_mode: bool) -> float:
    return 60.0 if long_mode else 5.0


# The fake service, the task that calls it, how it fails while down.
SERVICES = {
    "geocoder": ("geocode", Chaos(down=True)),  # 503
    "crm": ("crm", Chaos(down=True, reset=True)),  # connections dropped
    "lists": ("mailing_list", Chaos(down=True, retry_after=1.0)),  # 503 + Retry-After
}


@pytest.mark.parametrize("service", list(SERVICES))
async def test_a_service_down_for_a_minute_then_back(
    service: str, server_state: ServerState, bootstrapped: Any, tmp_path: Path,
    long_mode: bool
) -> None:
    outage = outage_seconds(long_mode)
    before, after = (10.0, 20.0) if long_mode else (1.0, 3.0)
    task, chaos = SERVICES[service]
    with fault_record(f"service-down-{service}", server_state.kind, long_mode,
                      f"{service} down for {outage:g} s ({chaos_text(chaos)}), "
                      f"{RATE:g} events/s throughout") as record:
        async with Pipeline(server_state, tmp_path) as p:
            retune(p, services=production_retry(outage / 60))
            db = tmp_path / "worker.sqlite"
            worker = WorkerProcess(p.config_file, tmp_path / "worker.log")
            worker.start()
            try:
                await worker.running()
                fake = p.services.service(service)
                n = int((before + outage + after) * RATE)
                site = SteadyPublisher(p)
                publishing = asyncio.create_task(site.run(registrations(n, "s"), RATE))
                await asyncio.sleep(before)
                fake.control.set(chaos)
                record.faults_injected = 1
                down_calls = fake.stats.calls
                await asyncio.sleep(outage)
                fake.control.set(Chaos())
                back = time.monotonic()
                record.extra["calls_while_down"] = fake.stats.calls - down_calls
                await fake.stats.wait_until(
                    lambda s: any(r.ok for r in s.calls_since(back)), timeout=outage + 60)
                record.recovery_s.append(first_ok(fake.stats.calls_since(back)) - back)
                await publishing
                settled_at = await settle(db, p.site, list(site.accepted), timeout=outage + 120)
                record.extra["backlog_cleared_s"] = round(settled_at - back, 2)
            finally:
                status = worker.stop()
            check_ledger(record, db, p.site, list(site.accepted),
                         max_redeliveries=CALLBACK_CONCURRENCY)
            assert status == 0
            # Events published after the service was back must all be done: the worker
            # came back to the service without anyone telling it to.
            late = [i for i, at in site.accepted.items() if at > back + 0.5]
            assert late and all(p.site.applied[i] for i in late)
            assert_done(db, late)
            # Only the service that was down failed anything.
            reasons = {r for rs in read_store(db).task_dead.values() for r in rs}
            assert all(r.startswith(f"{task} failed after") for r in reasons), reasons
            # A dead service costs a few probes, not a call per task attempt.
            per_second = record.extra["calls_while_down"] / outage
            record.extra["calls_per_s_while_down"] = round(per_second, 1)
            assert record.extra["calls_while_down"] < RATE * outage, (
                "the breaker should keep calls to a dead service well below the event rate")
            record.extra["dead_letter_share"] = round(
                record.extra["events_failed"] / record.events_accepted, 3)


async def test_the_callback_site_down_for_a_minute_then_back(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path, long_mode: bool
) -> None:
    outage = outage_seconds(long_mode)
    before, after = (10.0, 20.0) if long_mode else (1.0, 3.0)
    # The callback schedule (now, 5 s, 30 s, 2 min, 10 min, ...) compressed so that its
    # eight attempts span about twice the outage, as the real schedule spans 3.7 h.
    scale = 0.01 * outage / 60
    with fault_record("site-down", server_state.kind, long_mode,
                      f"the callback site stopped (connection refused) for {outage:g} s, "
                      f"{RATE:g} events/s throughout") as record:
        p = Pipeline(server_state, tmp_path)
        p.site = DemoSite(secret=WEBHOOK_SECRET, seed=7, port=free_port())
        async with p:
            retune(p, callback_time_scale=scale)
            db = tmp_path / "worker.sqlite"
            worker = WorkerProcess(p.config_file, tmp_path / "worker.log")
            worker.start()
            try:
                await worker.running()
                n = int((before + outage + after) * RATE)
                site = SteadyPublisher(p)
                publishing = asyncio.create_task(site.run(registrations(n, "c"), RATE))
                await asyncio.sleep(before)
                await p.site.stop()
                record.faults_injected = 1
                applied_before = len(p.site.applied)
                await asyncio.sleep(outage)
                await p.site.start()
                back = time.time()
                held_back = len(site.accepted) - applied_before
                record.extra["callbacks_held_back"] = held_back
                await publishing
                await settle(db, p.site, list(site.accepted), timeout=outage * 3 + 60)
                last = max(entry["at"] for entry in p.site.applied.values())
                record.recovery_s.append(last - back)
            finally:
                status = worker.stop()
            check_ledger(record, db, p.site, list(site.accepted),
                         max_redeliveries=CALLBACK_CONCURRENCY)
            assert status == 0
            assert held_back > RATE * outage / 2, "the outage must hold callbacks back"
            assert record.extra["callbacks_dead_lettered"] == 0, (
                "the retry schedule outlasts the outage, so every callback must arrive")
            assert len(p.site.applied) == record.events_accepted


def chaos_text(chaos: Chaos) -> str:
    if chaos.reset:
        return "connections reset"
    if chaos.retry_after is not None:
        return f"503 with Retry-After {chaos.retry_after:g} s"
    return "503"


def first_ok(calls: list[CallRecord]) -> float:
    return min(r.at for r in calls if r.ok)


def assert_done(db: Path, ids: list[str]) -> None:
    view = read_store(db)
    not_done = [i for i in ids if view.states.get(i) != "done"]
    assert not not_done, (
        f"{len(not_done)} events published after the service was back did not complete: "
        f"{[(i, view.task_dead.get(i)) for i in not_done[:3]]}")
