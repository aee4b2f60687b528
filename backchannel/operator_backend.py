"""The operator backend over a running process: what `status`, `show`, `retry`... act on.

It implements :class:`commands.backend.OperatorBackend` against the :class:`Runtime` of
``backchannel run`` (worker and bot in this process). Relaying feeds into chats is the
bot's job, so subscriptions are delegated to a :class:`Relays` object the bot provides.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from backchannel import __version__
from backchannel.errors import CommandError
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

if TYPE_CHECKING:
    from backchannel.app import Runtime
    from workers.worker import Worker


class Relays(Protocol):
    async def subscribe(self, feed: str, target: str) -> None: ...

    async def unsubscribe(self, feed: str, target: str) -> bool: ...

    def subscriptions(self, target: str) -> Sequence[str]: ...


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class RuntimeBackend:
    def __init__(self, runtime: Runtime, relays: Relays | None = None) -> None:
        self.runtime = runtime
        self.relays = relays

    @property
    def worker(self) -> Worker:
        if self.runtime.worker is None:
            raise CommandError("no worker runs in this process; run the bot next to the worker "
                               "(`backchannel run --components worker,bot`)")
        worker: Worker = self.runtime.worker
        return worker

    async def status(self) -> StatusView:
        doc = await self.runtime.status()
        components = tuple(ComponentView(name, c.get("state", "?"), c.get("detail", ""))
                           for name, c in doc["components"].items())
        settings = self.runtime.settings
        return StatusView(
            components=components,
            connected=any(c.ready.is_set() for c in self.runtime.connections.values()),
            server=f"{settings.xmpp.server_kind} {settings.xmpp.host}:{settings.xmpp.port}",
            uptime_s=time.time() - self.runtime.started_at,
            queue_depth=int(doc.get("queue_depth", 0)),
            in_flight=int(doc.get("in_flight", 0)),
            breakers=dict(doc.get("breakers", {})),
            paused=tuple(doc.get("paused", ())),
        )

    async def stats(self, window_s: float) -> StatsView:
        since = time.time() - window_s
        store = self.worker.store
        received = store.q("SELECT COUNT(*) FROM events WHERE received_at >= ?", (since,))[0][0]
        per_task: dict[str, dict[str, Any]] = {}
        for what, outcome, count, durations in store.attempt_stats(since):
            entry = per_task.setdefault(what, {"ok": 0, "fail": 0, "durations": []})
            if outcome == "ok":
                entry["ok"] += count
                entry["durations"].extend(durations)
            else:
                entry["fail"] += count
        tasks = tuple(
            TaskStatsView(task, e["ok"], e["fail"], _quantile(e["durations"], 0.5),
                          _quantile(e["durations"], 0.99))
            for task, e in sorted(per_task.items()))
        return StatsView(window_s=window_s, events_per_s=received / window_s, tasks=tasks)

    async def events(self, type_glob: str | None, source: str | None,
                     last: int) -> Sequence[EventSummary]:
        rows = self.worker.store.events(type_glob=type_glob, source=source, limit=last)
        return [EventSummary(r.id, r.type, r.source, _dt(r.received_at), r.state) for r in rows]

    async def trace(self, event_id: str) -> EventTrace | None:
        store = self.worker.store
        row = store.event(event_id)
        if row is None:
            return None
        tasks, callbacks = [], []
        for what, attempt, started, ms, outcome, error in store.attempts(event_id):
            if what == "callback":
                callbacks.append(CallbackAttemptView(attempt, _dt(started), outcome, error))
            else:
                tasks.append(TaskAttemptView(what, attempt, _dt(started), ms, outcome, error))
        summary = EventSummary(row.id, row.type, row.source, _dt(row.received_at), row.state)
        return EventTrace(summary, tuple(tasks), tuple(callbacks))

    def _dl_view(self, d: Any) -> DeadLetterView:
        return DeadLetterView(str(d.id), d.event_id, d.reason, d.last_error or "", d.attempts,
                              _dt(d.at))

    async def deadletters(self, limit: int) -> Sequence[DeadLetterView]:
        return [self._dl_view(d) for d in self.worker.store.deadletters(limit)]

    async def deadletter(self, deadletter_id: str) -> DeadLetterView | None:
        if not deadletter_id.isdigit():
            return None
        d = self.worker.store.deadletter(int(deadletter_id))
        return self._dl_view(d) if d else None

    async def retry_deadletter(self, deadletter_id: str) -> bool:
        if not deadletter_id.isdigit():
            return False
        return self.worker.retry_deadletter(int(deadletter_id))

    async def retry_all_deadletters(self) -> int:
        return self.worker.retry_all_deadletters()

    async def purge_deadletters(self) -> int:
        return self.worker.store.purge_deadletters()

    async def replay(self, since: datetime, type_glob: str | None) -> int:
        return self.worker.replay(since.timestamp(), type_glob)

    async def feeds(self) -> Sequence[str]:
        return list(self.runtime.settings.nodes.feeds)

    def _relays(self) -> Relays:
        if self.relays is None:
            raise CommandError("feed relays are run by the chat bot; use it from a chat")
        return self.relays

    async def subscribe(self, feed: str, target: str) -> None:
        if feed not in self.runtime.settings.nodes.feeds:
            raise CommandError(f"no feed {feed!r}; feeds: "
                               f"{', '.join(self.runtime.settings.nodes.feeds)}")
        await self._relays().subscribe(feed, target)

    async def unsubscribe(self, feed: str, target: str) -> bool:
        return await self._relays().unsubscribe(feed, target)

    async def subscriptions(self, target: str) -> Sequence[str]:
        return self._relays().subscriptions(target)

    async def geocode(self, address: str) -> Mapping[str, Any] | None:
        lane = self.worker.lanes.get("geocode")
        if lane is None:
            raise CommandError("no geocode task is configured")
        task: Any = lane.task
        found = await task.geocoder.geocode(address)
        return found.to_dict() if found else None

    async def pause(self, service: str) -> None:
        try:
            self.worker.pause(service)
        except KeyError:
            raise CommandError(f"no service {service!r}; services: "
                               f"{', '.join(self.worker.services())}") from None

    async def resume(self, service: str) -> None:
        try:
            self.worker.resume(service)
        except KeyError:
            raise CommandError(f"no service {service!r}; services: "
                               f"{', '.join(self.worker.services())}") from None

    async def services(self) -> Sequence[str]:
        return self.worker.services()

    async def version(self) -> str:
        return f"backchannel {__version__}"
