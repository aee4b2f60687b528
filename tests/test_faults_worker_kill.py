"""``kill -9`` of the worker process five times during one run, at random moments.

The worker is a real ``backchannel run --components worker`` process, restarted at once
after each kill (what systemd's ``Restart=always`` would do). Events keep flowing from the
site the whole time, so kills land while events arrive, while tasks and callbacks are in
flight, and while a restarted worker is still catching up. 2000 events in long mode, 400
in CI; five kills either way.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backchannel.localserver import ServerState
from tests.fault_support import (
    CALLBACK_CONCURRENCY,
    SteadyPublisher,
    WorkerProcess,
    check_ledger,
    fault_record,
    registrations,
    settle,
)
from tests.pipeline_harness import Pipeline, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.fault]

KILLS = 5


def applied_at_least(p: Pipeline, count: int) -> Callable[[], bool]:
    return lambda: len(p.site.applied) >= count


async def test_five_kill_9s_during_one_run_lose_nothing(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path, long_mode: bool
) -> None:
    n = 2000 if long_mode else 400
    rng = random.Random()
    with fault_record("worker-kill-9", server_state.kind, long_mode,
                      f"kill -9 of the worker process {KILLS} times during one "
                      f"{n}-event run, restarted at once") as record:
        async with Pipeline(server_state, tmp_path) as p:
            db = tmp_path / "worker.sqlite"
            worker = WorkerProcess(p.config_file, tmp_path / "worker.log")
            worker.start()
            try:
                await worker.running()
                events = registrations(n, "k")
                site = SteadyPublisher(p)
                rate = n / 16 if not long_mode else 50.0  # 16 s in CI, 40 s long
                run_for = n / rate
                publishing = asyncio.create_task(site.run(events, rate))
                started = time.monotonic()
                # One kill at a random moment in each fifth of the run, so kills land
                # while events arrive, while work is in flight and (when a slot starts
                # before the last restart finished) while the worker is catching up.
                slot = run_for * 0.9 / KILLS
                killed_at: list[tuple[int, int]] = []
                for k in range(KILLS):
                    moment = started + run_for * 0.05 + slot * (k + rng.random())
                    await asyncio.sleep(max(0.0, moment - time.monotonic()))
                    worker.kill9()
                    killed = time.monotonic()
                    killed_at.append((len(site.accepted), len(p.site.applied)))
                    record.faults_injected += 1
                    worker.start()
                    await worker.running()
                    await wait_until(applied_at_least(p, min(n, len(p.site.applied) + 1)),
                                     60, "progress after the restart")
                    record.recovery_s.append(time.monotonic() - killed)
                await publishing
                await settle(db, p.site, list(site.accepted), timeout=180)
            finally:
                status = worker.stop()
            record.extra["accepted_applied_at_kills"] = killed_at
            record.extra["site_publish_retries"] = site.retries
            check_ledger(record, db, p.site, list(site.accepted),
                         max_redeliveries=KILLS * CALLBACK_CONCURRENCY)
            assert status == 0, "the last worker must stop cleanly on SIGTERM"
            assert record.faults_injected == KILLS
            assert all(0 < applied <= accepted < n for accepted, applied in killed_at), (
                f"kills not mid-stream (accepted, applied): {killed_at}")
            assert record.events_accepted == n
            assert record.done == n, "no service failed, so every event must be done"
