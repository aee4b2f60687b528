"""Service lanes: each outside service gets its own queue, limits and breaker.

Why lanes: a slow or dead service must never delay another service's tasks. Each lane
pulls its own due tasks from the store (an indexed query, so the backlog size does not
matter), runs at most ``concurrency`` at once, spaces calls with a rate limiter
(aiolimiter's leaky bucket), bounds each call with a timeout, and consults its circuit
breaker. While the breaker is open, due tasks fail fast (an attempt is recorded, no call
is made). While the service is merely flaky (the breaker's probes keep succeeding now
and then) such a deferral costs the task no attempt; once the breaker has opened three
times in a row the service is down, and each deferral counts as a failed attempt, so a
dead service costs a few probes, not thousands of calls, and its tasks still reach their
retry limit and become dead letters on time. When a probe succeeds again, every task of
the lane that waits for a retry becomes due at once (the outage is over; the backlog
drains at the lane's concurrency and rate limits, not on each task's backoff clock).

Retries are durable: a failed attempt writes ``next_at`` into the store (exponential
backoff with jitter, or the service's Retry-After when longer), so a restart keeps the
schedule instead of forgetting it as an in-memory retry loop (tenacity, stamina) would.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiolimiter import AsyncLimiter

from backchannel.config import ServiceSettings
from backchannel.errors import EventError, PermanentTaskError, TemporaryTaskError
from backchannel.metrics import Metrics
from pubsub.envelope import Event, validate
from workers.breaker import CircuitBreaker
from workers.feeding import stop_feeding, wait_woken
from workers.store import Store
from workers.tasks.base import Task

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 3600.0
TaskKey = tuple[str, str]  # (event id, task name)


def backoff(attempt: int, initial: float, maximum: float,
            retry_after: float | None = None) -> float:
    """Delay after failed attempt ``attempt`` (1-based): exponential, equal jitter."""
    base = float(min(maximum, initial * 2 ** (attempt - 1)))
    delay = base * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


class Lane:
    def __init__(self, task: Task, settings: ServiceSettings, store: Store, metrics: Metrics,
                 on_done: Callable[[str], None], events: Callable[[str], Event | None]) -> None:
        self.task = task
        self.settings = settings
        self.name = task.name
        self.store = store
        self.metrics = metrics
        self.on_done = on_done
        self.load_event = events
        self.breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_reset)
        self.limiter = (AsyncLimiter(settings.rate_per_second, 1.0)
                        if settings.rate_per_second > 0 else None)
        if self.limiter is not None and settings.rate_per_second < 1:
            self.limiter = AsyncLimiter(1, 1.0 / settings.rate_per_second)
        self.in_flight: dict[TaskKey, asyncio.Task[None]] = {}
        self.paused = False
        self.calls = 0
        self._wake = asyncio.Event()
        self._feeder: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._feeder = asyncio.create_task(self._feed(), name=f"lane:{self.name}")

    def wake(self) -> None:
        self._wake.set()

    async def close(self, grace: float = 5.0) -> None:
        """Stop taking work; give in-flight calls ``grace`` seconds, then cancel them.

        A cancelled call is simply not recorded: its task is still pending in the store
        and runs again after the restart.
        """
        await stop_feeding(self._feeder, self.in_flight.values(), grace)
        await self.task.aclose()

    # ------------------------------------------------------------------ feeding
    async def _feed(self) -> None:
        while True:
            self._wake.clear()
            timeout = self._dispatch()
            await wait_woken(self._wake, timeout)

    def _dispatch(self) -> float | None:
        """Start what is due; return how long to sleep (None: until woken)."""
        if self.paused:
            return None
        free = self.settings.concurrency - len(self.in_flight)
        if free <= 0:
            return None  # a finishing call wakes us
        now = time.time()
        due = self.store.due_tasks(self.name, now, free, exclude=set(self.in_flight))
        for key in due:
            self.in_flight[key] = asyncio.create_task(self._execute(key, self.breaker.allow()))
        if len(due) == free:
            return None
        nxt = self.store.next_due(self.name)
        if nxt is None:
            return None
        return max(0.01, nxt - time.time())

    # ------------------------------------------------------------------ running
    async def _execute(self, key: TaskKey, allowed: bool) -> None:
        event_id, task_name = key
        try:
            current = self.store.task_state(event_id, task_name)
            if current is None or current[0] != "pending":
                return
            attempt = current[1] + 1
            event = self.load_event(event_id)
            started, t0 = time.time(), time.monotonic()
            result: Mapping[str, Any] | None = None
            error: str | None = None
            retry_after: float | None = None
            retryable = True
            if event is None:
                error, retryable = "the event is missing from the store", False
            elif not allowed:
                wait = self.breaker.wait_time() + random.uniform(0, 0.05)  # noqa: S311
                if not self.breaker.persistently_down:
                    self.store.defer_task(event_id, task_name, time.time() + wait)
                    self.metrics.inc("backchannel_task_deferrals_total", {"task": self.name})
                    return
                error = f"circuit breaker open for {self.name} (service down): not called"
                retry_after = wait
            else:
                try:
                    if self.limiter is not None:
                        await self.limiter.acquire()
                    self.calls += 1
                    async with asyncio.timeout(self.settings.timeout):
                        result = await self.task.run(event)
                    if self.breaker.success():
                        self._service_back()
                except TemporaryTaskError as exc:
                    error, retry_after = str(exc), exc.retry_after
                    self.breaker.failure()
                except PermanentTaskError as exc:
                    error, retryable = str(exc), False
                    self.breaker.neutral()
                except TimeoutError:
                    error = f"{self.name}: no answer within {self.settings.timeout:g} s"
                    self.breaker.failure()
                except asyncio.CancelledError:
                    self.breaker.neutral()
                    raise
                except Exception as exc:
                    log.exception("task %s crashed on event %s", self.name, event_id)
                    error = f"{self.name}: internal error ({type(exc).__name__})"
                    self.breaker.failure()
            duration = (time.monotonic() - t0) * 1000
            ok = error is None
            next_at = None
            if not ok and retryable and attempt < self.settings.max_attempts:
                next_at = time.time() + backoff(attempt, self.settings.backoff_initial,
                                                self.settings.backoff_max, retry_after)
            outcome = "ok" if ok else ("retry" if next_at else "dead")
            self.store.task_finished(event_id, task_name, ok=ok, attempts=attempt,
                                     result=dict(result) if result is not None else None,
                                     error=error, started=started, duration_ms=duration,
                                     next_at=next_at)
            self.metrics.inc("backchannel_task_attempts_total",
                             {"task": self.name, "outcome": outcome})
            if allowed:
                self.metrics.observe("backchannel_task_duration_seconds", duration / 1000,
                                     {"task": self.name})
            if outcome != "ok":
                log.info("task %s on %s: attempt %d %s (%s)", self.name, event_id, attempt,
                         outcome, error)
            if next_at is None:
                self.on_done(event_id)
        finally:
            self.in_flight.pop(key, None)
            self._wake.set()


    def _service_back(self) -> None:
        """The breaker just closed: tasks held back by backoff while the service was
        down run now, instead of each waiting out its own (by then long) delay."""
        count = self.store.expedite_tasks(self.name, time.time())
        log.warning("service %s answers again: %d waiting task(s) due now", self.name, count)
        self.metrics.inc("backchannel_service_recoveries_total", {"task": self.name})


def event_from_doc(doc: Mapping[str, Any]) -> Event | None:
    try:
        return validate(dict(doc))
    except EventError:
        return None


