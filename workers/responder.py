"""The responder: calls each originating site back, as its registration says.

Due callbacks come from the store (so a restart resumes them); each is one attempt
through :class:`~workers.callbacks.CallbackClient` (registered endpoint only, no
redirects, no private addresses unless allowed). Failures are retried on the callback
schedule (seconds, then minutes, then hours, with jitter; Retry-After honoured); a 410 or
another refusal stops at once; after ``max_attempts`` the callback becomes a dead letter.
When a site answers again after failures, its other waiting callbacks become due at once.
The event id travels as the idempotency key, so a site that checks it applies each
result once although delivery is at-least-once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from backchannel.config import Settings
from backchannel.errors import CallbackError, CallbackRefused
from backchannel.metrics import Metrics
from workers.callbacks.client import CallbackClient, next_delay
from workers.feeding import stop_feeding, wait_woken
from workers.store import Store

log = logging.getLogger(__name__)


class Responder:
    def __init__(self, settings: Settings, store: Store, metrics: Metrics,
                 result_for: Callable[[str], tuple[str, dict[str, Any]] | None],
                 on_dead: Callable[[str, str, str, int], None]) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.result_for = result_for  # event id -> (event type, result data)
        self.on_dead = on_dead  # (event id, reason, last error, attempts)
        self.client = CallbackClient()
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.paused = False
        self._failing: set[str] = set()  # sites whose last callback attempt failed
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.__aenter__()
        self._loop = asyncio.create_task(self._feed(), name="responder")

    def wake(self) -> None:
        self._wake.set()

    async def close(self, grace: float = 5.0) -> None:
        await stop_feeding(self._loop, self.in_flight.values(), grace)
        await self.client.close()

    async def _feed(self) -> None:
        limit = self.settings.worker.callback_concurrency
        while True:
            self._wake.clear()
            timeout: float | None = None
            free = limit - len(self.in_flight)
            if not self.paused and free > 0:
                due = self.store.due_callbacks(time.time(), free, set(self.in_flight))
                for event_id in due:
                    self.in_flight[event_id] = asyncio.create_task(self._deliver(event_id))
                if len(due) < free:
                    nxt = self.store.next_callback_due()
                    timeout = None if nxt is None else max(0.01, nxt - time.time())
            await wait_woken(self._wake, timeout)

    async def _deliver(self, event_id: str) -> None:
        try:
            row = self.store.callback(event_id)
            if row is None or row.state != "pending":
                return
            site = self.settings.site_by_name(row.site)
            found = self.result_for(event_id)
            attempt = row.attempts + 1
            started, t0 = time.time(), time.monotonic()
            status: int | None = None
            error: str | None = None
            state = "ok"
            retry_after: float | None = None
            if site is None or site.callback is None:
                state, error = "dead", f"site {row.site!r} has no callback registered any more"
            elif found is None:
                state, error = "dead", "the event's result is missing from the store"
            else:
                event_type, result = found
                try:
                    report = await self.client.deliver(
                        site.callback, event_id=event_id, event_type=event_type,
                        result=result, attempt=attempt)
                    status = report.status
                except CallbackRefused as exc:
                    state, error = "dead", str(exc)
                except CallbackError as exc:
                    state, error, retry_after = "pending", str(exc), exc.retry_after
            duration = (time.monotonic() - t0) * 1000
            next_at = None
            max_attempts = site.callback.max_attempts if site and site.callback else 1
            if state == "pending":
                if attempt >= max_attempts:
                    state = "dead"
                    error = f"{error} (gave up after {attempt} attempts)"
                else:
                    next_at = time.time() + next_delay(
                        attempt, scale=self.settings.worker.callback_time_scale,
                        retry_after=retry_after)
            self.store.callback_finished(event_id, state=state, attempts=attempt,
                                         status=status, error=error, next_at=next_at,
                                         started=started, duration_ms=duration)
            if state == "pending":
                self._failing.add(row.site)
            elif state == "ok" and row.site in self._failing:
                self._site_back(row.site)
            outcome = {"ok": "ok", "pending": "retry", "dead": "dead"}[state]
            self.metrics.inc("backchannel_callbacks_total", {"outcome": outcome})
            self.metrics.observe("backchannel_callback_duration_seconds", duration / 1000)
            if state != "ok":
                log.info("callback for %s: attempt %d %s (%s)", event_id, attempt, outcome,
                         error)
            if state == "dead":
                self.on_dead(event_id, f"callback to {row.site} failed", error or "", attempt)
        finally:
            self.in_flight.pop(event_id, None)
            self._wake.set()

    def _site_back(self, site: str) -> None:
        """A site answers again after failures: its held-back callbacks are due now,
        not each at its own point on the (minutes, then hours) retry schedule."""
        self._failing.discard(site)
        count = self.store.expedite_callbacks(site, time.time())
        log.warning("site %s answers callbacks again: %d waiting callback(s) due now",
                    site, count)
