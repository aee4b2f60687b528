"""``kill -9`` of the worker process mid-stream: nothing lost, nothing that succeeded re-run.

The worker runs as a real ``backchannel run --components worker`` process. It is killed
without warning at a random moment while 500 events flow, then started again. Every
event must complete, every task must have exactly one successful attempt on record, and
the demo site must have applied each callback once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from backchannel.localserver import ServerState
from tests.pipeline_harness import Pipeline, wait_until

pytestmark = pytest.mark.integration


def start_worker(config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - handed to the child, closed with it
    proc = subprocess.Popen(
        [sys.executable, "-m", "backchannel.cli", "-v", "run", "--components", "worker",
         "-c", str(config_file)],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    return proc


def store_counts(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    with sqlite3.connect(db, timeout=5) as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM events GROUP BY state").fetchall())


async def test_kill_9_at_a_random_moment_then_restart(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    rng = random.Random()
    async with Pipeline(server_state, tmp_path) as p:
        db = tmp_path / "worker.sqlite"
        log = tmp_path / "worker.log"
        proc = start_worker(p.config_file, log)
        try:
            await wait_until(lambda: b"backchannel running" in log.read_bytes(), 60,
                             "the worker process to start")
            events = p.registrations(500, ["Paris, France", "Lyon, France", "Oslo, Norway"])
            publishing = asyncio.create_task(p.publish_many(events))
            kill_after = rng.randint(50, 350)
            await wait_until(lambda: len(p.site.applied) >= kill_after, 120,
                             f"{kill_after} callbacks before the kill")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            killed_at = len(p.site.applied)
            await publishing
            proc = start_worker(p.config_file, log)
            await wait_until(lambda: store_counts(db).get("done", 0) == 500, 180,
                             "all 500 events done after the restart")
            await p.site.wait_for(500, timeout=120)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        assert proc.returncode == 0, "the restarted worker must stop cleanly on SIGTERM"
        assert 0 < killed_at < 500, "the kill must land mid-stream"
        with sqlite3.connect(db) as conn:
            twice = conn.execute(
                "SELECT event_id, what, COUNT(*) FROM attempts WHERE outcome = 'ok' "
                "GROUP BY event_id, what HAVING COUNT(*) > 1").fetchall()
            oks = conn.execute("SELECT COUNT(*) FROM attempts WHERE outcome = 'ok' AND "
                               "what != 'callback'").fetchone()[0]
        assert not twice, f"succeeded work ran again: {twice[:5]}"
        assert oks == 500 * 3
        assert set(p.site.applied) == {e.id for e in events}
