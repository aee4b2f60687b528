"""Graceful stop of a feeder loop and the calls it started, shared by lanes and responder."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


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
