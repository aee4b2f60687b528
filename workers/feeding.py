"""Feeder loops (lanes, responder, outbox): waiting to be woken, and stopping gracefully.

Why a helper: ``asyncio.wait_for`` on Python 3.11 can swallow a cancellation that arrives
while the awaited event is being set, and a feeder that swallows its cancellation never
stops (seen: a worker shutdown hung). ``asyncio.timeout`` does not have that race.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def wait_woken(wake: asyncio.Event, timeout: float | None) -> None:
    """Wait until ``wake`` is set or ``timeout`` seconds pass (None: no limit)."""
    try:
        async with asyncio.timeout(timeout):
            await wake.wait()
    except TimeoutError:
        pass


async def stop_feeding(feeder: asyncio.Task[None] | None, running: Iterable[asyncio.Task[None]],
                       grace: float) -> None:
    """Cancel ``feeder`` (no new work), give ``running`` calls ``grace`` seconds, then
    cancel what is left. A cancelled call records nothing, so its work is still due in the
    store and runs again after the restart."""
    if feeder is not None:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
    calls = list(running)
    if not calls:
        return
    _, still = await asyncio.wait(calls, timeout=grace)
    for task in still:
        task.cancel()
    for task in still:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
