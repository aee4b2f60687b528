"""An in-memory OperatorBackend for command tests (and for bot tests that need one).

It keeps just enough state to make transcripts meaningful: events, dead letters, feeds and
subscriptions, paused services. ``calls`` records every method call, and ``fail_next``
makes the next call raise (to test error paths).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from commands.views import (
    CallbackAttemptView,
    ComponentView,
    DeadLetterView,
    EventSummary,
    EventTrace,
    StatsView,
    StatusView,
    TaskAttemptView,
    TaskStatsView,
)

T0 = datetime(2026, 12, 4, 15, 0, 0, tzinfo=UTC)


def _events() -> list[EventSummary]:
    out = []
    for i in range(150):
        kind = "user.registered" if i % 3 else "user.profile_changed"
        source = "https://shop.example.com" if i % 2 else "https://blog.example.org"
        out.append(EventSummary(f"EV{i:04d}", kind, source, T0 + timedelta(seconds=i), "done"))
    return out


@dataclass
class FakeBackend:
    feeds_: list[str] = field(default_factory=lambda: ["signups", "activity"])
    services_: list[str] = field(default_factory=lambda: ["geocode", "crm", "mailing_list"])
    events_: list[EventSummary] = field(default_factory=_events)
    dead: dict[str, DeadLetterView] = field(default_factory=dict)
    subs: dict[str, set[str]] = field(default_factory=dict)
    paused: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    replayed: list[tuple[datetime, str | None]] = field(default_factory=list)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    fail_next: BaseException | None = None
    places: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "toluca lake, ca": {"latitude": 34.1522, "longitude": -118.3534,
                            "address": "Toluca Lake, Los Angeles, CA", "provider": "offline"},
    })

    def __post_init__(self) -> None:
        for i in range(3):
            d = DeadLetterView(f"DL{i}", f"EV{i:04d}", "crm gave up", "HTTP 503 from crm",
                               8, T0 + timedelta(minutes=i))
            self.dead[d.id] = d

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    async def status(self) -> StatusView:
        self._call("status")
        return StatusView(
            components=(ComponentView("worker", "running", "3 tasks"),
                        ComponentView("gateway", "running", "127.0.0.1:8080")),
            connected=True, server="xmpp.example.com", uptime_s=3720.0, queue_depth=12,
            in_flight=3, breakers={"geocode": "closed", "crm": "open"},
            paused=tuple(self.paused),
        )

    async def stats(self, window_s: float) -> StatsView:
        self._call("stats", window_s)
        return StatsView(window_s, 4.25, (TaskStatsView("geocode", 120, 2, 35.0, 410.5),
                                          TaskStatsView("crm", 100, 9, None, None)))

    async def events(
        self, type_glob: str | None, source: str | None, last: int
    ) -> Sequence[EventSummary]:
        self._call("events", type_glob, source, last)
        found = [e for e in reversed(self.events_)
                 if (type_glob is None or fnmatch.fnmatchcase(e.type, type_glob))
                 and (source is None or e.source == source)]
        return found[:last]

    async def trace(self, event_id: str) -> EventTrace | None:
        self._call("trace", event_id)
        event = next((e for e in self.events_ if e.id == event_id), None)
        if event is None:
            return None
        return EventTrace(
            event,
            (TaskAttemptView("geocode", 1, T0, 35.2, "ok"),
             TaskAttemptView("crm", 1, T0, None, "failed", "HTTP 503")),
            (CallbackAttemptView(1, T0, "200"),),
        )

    async def deadletters(self, limit: int) -> Sequence[DeadLetterView]:
        self._call("deadletters", limit)
        return sorted(self.dead.values(), key=lambda d: d.at, reverse=True)[:limit]

    async def deadletter(self, deadletter_id: str) -> DeadLetterView | None:
        self._call("deadletter", deadletter_id)
        return self.dead.get(deadletter_id)

    async def retry_deadletter(self, deadletter_id: str) -> bool:
        self._call("retry_deadletter", deadletter_id)
        if self.dead.pop(deadletter_id, None) is None:
            return False
        self.retried.append(deadletter_id)
        return True

    async def retry_all_deadletters(self) -> int:
        self._call("retry_all_deadletters")
        count = len(self.dead)
        self.retried += list(self.dead)
        self.dead.clear()
        return count

    async def purge_deadletters(self) -> int:
        self._call("purge_deadletters")
        count = len(self.dead)
        self.dead.clear()
        return count

    async def replay(self, since: datetime, type_glob: str | None) -> int:
        self._call("replay", since, type_glob)
        self.replayed.append((since, type_glob))
        return sum(1 for e in self.events_ if e.received_at >= since
                   and (type_glob is None or fnmatch.fnmatchcase(e.type, type_glob)))

    async def feeds(self) -> Sequence[str]:
        self._call("feeds")
        return list(self.feeds_)

    async def subscribe(self, feed: str, target: str) -> None:
        self._call("subscribe", feed, target)
        self.subs.setdefault(target, set()).add(feed)

    async def unsubscribe(self, feed: str, target: str) -> bool:
        self._call("unsubscribe", feed, target)
        here = self.subs.get(target, set())
        if feed not in here:
            return False
        here.discard(feed)
        return True

    async def subscriptions(self, target: str) -> Sequence[str]:
        self._call("subscriptions", target)
        return sorted(self.subs.get(target, set()))

    async def geocode(self, address: str) -> Mapping[str, Any] | None:
        self._call("geocode", address)
        return self.places.get(address.casefold())

    async def pause(self, service: str) -> None:
        self._call("pause", service)
        if service not in self.paused:
            self.paused.append(service)

    async def resume(self, service: str) -> None:
        self._call("resume", service)
        if service in self.paused:
            self.paused.remove(service)

    async def services(self) -> Sequence[str]:
        self._call("services")
        return list(self.services_)

    async def version(self) -> str:
        self._call("version")
        return "0.1.0"
