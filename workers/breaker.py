"""A circuit breaker per outside service.

Why our own (40 lines) rather than purgatory: the worker schedules retries durably in its
store instead of raising through a context manager, and the bot, dashboard and metrics
must read the state at any time. Semantics: ``closed`` counts consecutive failures; at
``threshold`` it opens for ``reset`` seconds; then ``half-open`` lets exactly one probe
through: success closes it, failure opens it again. After three openings in a row the
service counts as persistently down (see :attr:`persistently_down`).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(self, threshold: int, reset: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.reset = reset
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self.opened_count = 0
        self.consecutive_opens = 0  # openings without a success in between

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.reset:
            return "half-open"
        return "open"

    def wait_time(self) -> float:
        """Seconds until a call may be made (0 = now)."""
        state = self.state
        if state == "closed":
            return 0.0
        if state == "half-open":
            return 0.0 if not self.probing else min(1.0, self.reset)
        assert self.opened_at is not None
        return self.reset - (self.clock() - self.opened_at)

    def allow(self) -> bool:
        """Take permission for one call (marks the half-open probe as taken)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    @property
    def persistently_down(self) -> bool:
        """Opened three times in a row (failed probes): the service is down, not flaky."""
        return self.consecutive_opens >= 3

    def clear(self) -> None:
        """Forget the past: an operator says the service is back (retry, resume)."""
        self.success()

    def success(self) -> bool:
        """A call worked. True if that closed an opened breaker (the service is back)."""
        reopened = self.opened_at is not None
        self.consecutive_opens = 0
        self.failures = 0
        self.opened_at = None
        self.probing = False
        return reopened

    def failure(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            if self.opened_at is None or self.probing:
                self.opened_count += 1
                self.consecutive_opens += 1
            self.opened_at = self.clock()
        self.probing = False

    def neutral(self) -> None:
        """A call ended without saying anything about the service (e.g. a bad request)."""
        self.probing = False
