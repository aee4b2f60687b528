"""The XMPP backbone misbehaves: the server restarts mid-stream, and each component's
connection is cut abruptly (the TCP transport aborted, no stream close).

All three components run, as ``backchannel run`` hosts them: worker, gateway and bot.
The site publishes through the gateway's HTTP ingest (retrying a 503 with the same
event id), a display reads the signups feed over Server-Sent Events, and an operator
talks to the bot. Afterwards nothing accepted may be lost or done twice, the display
must have every signup, the bot must answer, and every component must have reconnected
by itself; how long each took is the recovery time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backchannel.localserver import ManagedServer, ServerState
from pubsub.connection import XmppConnection
from tests.bot_harness import Chatter, World, bot_world
from tests.fault_support import (
    CALLBACK_CONCURRENCY,
    FaultRecord,
    HttpPublisher,
    SseReader,
    check_ledger,
    fault_record,
    registrations,
    settle,
)
from tests.pipeline_harness import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.fault]

RATE = 30.0
COMPONENTS = ("worker", "gateway", "bot")


async def reconnected(conns: Mapping[str, XmppConnection], sessions: Mapping[str, int],
                      since: float, timeout: float) -> dict[str, float]:
    """Seconds from ``since`` until each connection had a new session."""
    back: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(back) < len(conns):
        for name, conn in conns.items():
            if name not in back and conn.sessions > sessions[name] and conn.ready.is_set():
                back[name] = time.monotonic() - since
        if time.monotonic() > deadline:
            raise AssertionError(f"not reconnected within {timeout:.0f} s: "
                                 f"{sorted(set(conns) - set(back))}")
        await asyncio.sleep(0.02)
    return back


async def bot_answers(op: Chatter) -> None:
    await wait_until(op.conn.ready.is_set, 60, "the operator's client back online")
    assert "backchannel" in await op.ask("version", timeout=20)


async def finish(record: FaultRecord, w: World, site: HttpPublisher, feed: SseReader,
                 publishing: asyncio.Task[None], faults: int) -> None:
    """Let the run end, then check the ledger and the display's feed."""
    await publishing
    db = Path(w.settings.worker.store)
    accepted = list(site.accepted)
    await settle(db, w.pipeline.site, accepted, timeout=120)
    try:
        await wait_until(lambda: feed.distinct >= set(accepted), 60,
                         "every signup on the display's SSE feed")
    finally:
        record.extra["sse_connects"] = feed.connects
        record.extra["sse_missing"] = len(set(accepted) - feed.distinct)
        record.extra["sse_repeated"] = len(feed.ids) - len(feed.distinct)
        record.extra["http_retries"] = site.retries
        record.extra["http_refusals"] = {str(k): v for k, v in site.refused.items()}
    check_ledger(record, db, w.pipeline.site, accepted,
                 max_redeliveries=faults * CALLBACK_CONCURRENCY)
    assert record.done == record.events_accepted == len(accepted)


@dataclass
class Live:
    """A running world under load: components, the display, the operator, the site."""

    w: World
    feed: SseReader
    op: Chatter
    site: HttpPublisher
    publishing: asyncio.Task[None]


@contextlib.asynccontextmanager
async def live_world(server_state: ServerState, tmp_path: Path, n: int,
                     prefix: str) -> AsyncIterator[Live]:
    """Start the three components, a display on the signups feed, an operator, and a
    site publishing ``n`` registrations through the gateway at :data:`RATE`."""
    async with bot_world(server_state, tmp_path, components=COMPONENTS) as w, \
            aiohttp.ClientSession() as http:
        gateway = w.runtime.gateway.url
        feed = SseReader(http, gateway, "signups")
        feed.start()
        op = await w.client("operator")
        try:
            await wait_until(lambda: feed.connects >= 1, 10, "the display connected")
            site = HttpPublisher(w.pipeline, http, gateway)
            publishing = asyncio.create_task(site.run(registrations(n, prefix), RATE))
            yield Live(w, feed, op, site, publishing)
        finally:
            await feed.stop()


async def test_xmpp_server_restart_mid_stream(
    server_state: ServerState, managed: ManagedServer, bootstrapped: Any, tmp_path: Path,
    long_mode: bool
) -> None:
    run_for, downtime = (60.0, 10.0) if long_mode else (8.0, 1.0)
    n = int(run_for * RATE)
    with fault_record("xmpp-server-restart", server_state.kind, long_mode,
                      f"the XMPP server stopped for {downtime:g} s and started again on "
                      f"the same ports, {n} events at {RATE:g}/s through the gateway, "
                      "worker + gateway + bot running") as record:
        async with live_world(server_state, tmp_path, n, "r") as live:
            w = live.w
            await asyncio.sleep(run_for / 3)
            conns = {name: w.runtime.connections[name] for name in COMPONENTS}
            sessions = {name: conn.sessions for name, conn in conns.items()}
            applied = len(w.pipeline.site.applied)
            await asyncio.to_thread(managed.stop)
            record.faults_injected = 1
            await asyncio.sleep(downtime)
            # Recovery counts from the start command: ejabberd takes seconds to boot,
            # and the components reconnect while it does.
            back = time.monotonic()
            await asyncio.to_thread(managed.start)
            record.extra["server_start_s"] = round(time.monotonic() - back, 3)
            took = await reconnected(conns, sessions, back, timeout=60)
            record.extra["reconnect_s"] = {k: round(v, 3) for k, v in took.items()}
            await wait_until(lambda: len(w.pipeline.site.applied) > applied + 1, 60,
                             "callbacks flowing again")
            record.recovery_s.append(time.monotonic() - back)
            await bot_answers(live.op)
            await finish(record, w, live.site, live.feed, live.publishing, faults=1)
            assert applied < record.events_accepted, "the restart must land mid-stream"


async def test_each_component_connection_cut_abruptly(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path, long_mode: bool
) -> None:
    run_for = 30.0 if long_mode else 8.0
    n = int(run_for * RATE)
    with fault_record("connection-cut", server_state.kind, long_mode,
                      "the TCP connection of the worker, then the gateway, then the bot "
                      f"aborted mid-stream, {n} events at {RATE:g}/s through the "
                      "gateway") as record:
        async with live_world(server_state, tmp_path, n, "x") as live:
            w = live.w
            started = time.monotonic()
            for k, name in enumerate(COMPONENTS):
                await asyncio.sleep(max(0.0, started + run_for * (k + 1) / 4
                                        - time.monotonic()))
                conn = w.runtime.connections[name]
                sessions = {name: conn.sessions}
                drops = conn.drops
                conn.cut()
                record.faults_injected += 1
                took = await reconnected({name: conn}, sessions, time.monotonic(), 60)
                record.recovery_s.append(took[name])
                record.extra[f"{name}_reconnect_s"] = round(took[name], 3)
                assert conn.drops == drops + 1, f"the {name} did not notice the cut"
            await bot_answers(live.op)
            await finish(record, w, live.site, live.feed, live.publishing, faults=3)
