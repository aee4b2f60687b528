"""Load faults: a flood of events at ten times the steady rate, read by a slow display.

The site publishes at a steady rate, then ten times that for a while, then steadily
again. Two displays read the signups feed from the gateway over Server-Sent Events: one
keeps up, the other stops reading during the flood (a stalled browser tab, a display on
a bad link). The gateway must drop the stalled one once its queue is full rather than
hold anything up (on loopback the kernel's buffers usually absorb the backlog first; see
the note at the assertions), the
display must get every signup after it reconnects with ``Last-Event-ID``, the display
that keeps up must never be dropped, and the worker must work off the backlog by itself.
Worker and gateway run as one ``backchannel run`` child process, so the test's own
event loop (publisher and displays) does not compete with them.
Recovery times: backlog drained after the flood ended; the slow display caught up
after it read again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backchannel.localserver import ServerState
from backchannel.localserver.base import free_port
from gateway.feeds import DROPPED
from tests.fault_support import (
    SseReader,
    SteadyPublisher,
    WorkerProcess,
    check_ledger,
    fault_record,
    read_store,
    registrations,
    retune,
    settle,
    small_window_session,
)
from tests.pipeline_harness import Pipeline, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.fault]

# The ratio is the point; the absolute rate is what a 2-core CI runner can publish while
# running the server and the worker too.
STEADY = 15.0  # events per second
FLOOD = STEADY * 10


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    """The sum of a counter over its labels, from the gateway's /metrics."""
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


async def test_a_flood_at_ten_times_the_rate_with_a_slow_feed_consumer(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path, long_mode: bool
) -> None:
    calm, flood = (20.0, 30.0) if long_mode else (3.0, 4.0)
    first, flooded, last = int(calm * STEADY), int(flood * FLOOD), int(calm * STEADY)
    n = first + flooded + last
    with fault_record("flood-and-slow-consumer", server_state.kind, long_mode,
                      f"{STEADY:g} events/s, then {FLOOD:g}/s for {flood:g} s, then "
                      f"{STEADY:g}/s; one SSE display stalls during the flood, one keeps "
                      "up") as record:
        async with Pipeline(server_state, tmp_path) as p, aiohttp.ClientSession() as http, \
                small_window_session() as slow_http:
            port = free_port()
            retune(p, gateway_port=port)
            gateway = f"http://127.0.0.1:{port}"
            db = tmp_path / "worker.sqlite"
            stack = WorkerProcess(p.config_file, tmp_path / "stack.log", "worker,gateway")
            stack.start()
            fast = SseReader(http, gateway, "signups")
            slow = SseReader(slow_http, gateway, "signups")
            peak = 0

            async def watch_backlog() -> None:
                nonlocal peak
                while True:
                    view = await asyncio.to_thread(read_store, db)
                    pending = sum(s == "pending" for s in view.states.values())
                    peak = max(peak, pending)
                    await asyncio.sleep(0.25)

            watcher = asyncio.create_task(watch_backlog())
            try:
                await stack.running()
                fast.start()
                slow.start()
                await wait_until(lambda: fast.connects >= 1 and slow.connects >= 1, 10,
                                 "both displays connected")
                site = SteadyPublisher(p)
                events = registrations(n, "f")
                await site.run(events[:first], STEADY)
                slow.flowing.clear()
                record.faults_injected = 2  # the flood and the stalled display
                flood_started = time.monotonic()
                await site.run(events[first:first + flooded], FLOOD, window=128)
                flood_over = time.monotonic()
                record.extra["flood_publish_rate"] = round(
                    flooded / (flood_over - flood_started), 1)
                calm_again = asyncio.create_task(site.run(events[first + flooded:], STEADY))
                # The display stays stalled until the gateway gives up on it, or 2 s.
                stalled_until = time.monotonic() + 2
                while time.monotonic() < stalled_until and \
                        await metric(http, gateway, DROPPED) < 1:
                    await asyncio.sleep(0.2)
                record.extra["slow_stalled_s"] = round(time.monotonic() - flood_started, 2)
                slow.flowing.set()
                await calm_again
                accepted = list(site.accepted)
                drained = await settle(db, p.site, accepted, timeout=180)
                record.recovery_s.append(drained - flood_over)
                await wait_until(lambda: slow.distinct >= set(accepted), 60,
                                 "the slow display caught up")
                record.recovery_s.append(time.monotonic() - flood_started
                                         - record.extra["slow_stalled_s"])
                await wait_until(lambda: fast.distinct >= set(accepted), 30,
                                 "the fast display has everything")
                dropped = int(await metric(http, gateway, DROPPED))
            finally:
                watcher.cancel()
                await fast.stop()
                await slow.stop()
                status = stack.stop()
            record.extra.update(
                peak_backlog=peak, backlog_drained_s=round(record.recovery_s[0], 2),
                slow_caught_up_s=round(record.recovery_s[1], 2),  # after it read again
                slow_connects=slow.connects, fast_connects=fast.connects,
                sse_dropped=dropped, slow_repeated=len(slow.ids) - len(slow.distinct))
            check_ledger(record, db, p.site, accepted, max_redeliveries=0)
            assert status == 0
            assert record.done == record.events_accepted == n
            assert record.extra["flood_publish_rate"] > STEADY * 7, "that was no flood"
            # No assertion on the backlog's size: a quiet machine's worker keeps up with
            # 150 events/s (peak 4 pending in the long run), a loaded CI runner's does not.
            # Whether the gateway had to drop the stalled display depends on the kernel:
            # a loopback socket's send buffer autotunes up to tcp_wmem's maximum (4 MiB
            # here, ~9000 feed messages), so on loopback the backlog usually stays in the
            # kernel and the gateway's queue never fills; the hub's drop itself is tested
            # in test_gateway_ingest. What must hold either way: the display resumes
            # only after a drop, ends with everything, and the other display is unharmed.
            assert slow.connects == 1 + dropped, "a display came back without being dropped"
            assert fast.connects == 1, "a display that keeps up must not be dropped"
            assert len(fast.ids) == len(fast.distinct), "the fast display got repeats"
