"""The worker component: events in, tasks run, results, feeds and callbacks out.

    events node --Consumer--> accept (store) --lanes--> tasks --finalize--> outbox --> nodes
                                                                     \\--> responder --> site

Every arrow writes the store first, so ``kill -9`` anywhere loses nothing: at start the
worker finalizes events whose tasks all ended, lanes pick up pending tasks, the outbox
publishes what was decided but not confirmed, the responder resumes due callbacks, and
the consumer's catch-up brings in events published while it was away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import aiohttp

from backchannel import __version__
from backchannel.config import Settings
from backchannel.errors import EventError, StoreError
from backchannel.metrics import Metrics
from pubsub.client import PubSub
from pubsub.connection import XmppConnection
from pubsub.consumer import Consumer
from pubsub.envelope import Event
from pubsub.seen import SeenStore
from workers import outputs
from workers.analyzer import Analyzer
from workers.feeding import stop_feeding
from workers.lanes import Lane, event_from_doc
from workers.outbox import Outbox, encode
from workers.responder import Responder
from workers.store import Store, TaskRow
from workers.tasks.base import TaskEnv, build_tasks

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: Settings, conn: XmppConnection, *,
                 metrics: Metrics | None = None, store_path: str | None = None) -> None:
        self.settings = settings
        self.conn = conn
        self.metrics = metrics or Metrics()
        path = store_path or settings.worker.store
        self.store = Store(path)
        self.seen = SeenStore(path)
        self.pubsub = PubSub(conn, settings.xmpp.pubsub_service)
        self.analyzer = Analyzer(settings.worker.routes)
        self.outbox = Outbox(conn, self.pubsub, self.store, self.metrics)
        self.responder = Responder(settings, self.store, self.metrics, self._result_for,
                                   self._callback_dead)
        self.consumer = Consumer(
            conn, self.pubsub, settings.nodes.events, self.seen, self.accept,
            on_invalid=self.invalid, max_bytes=settings.max_event_bytes,
            known_sources=lambda s: settings.site_by_source(s) is not None,
        )
        self.lanes: dict[str, Lane] = {}
        self.started_at = time.time()
        self._http: aiohttp.ClientSession | None = None
        self._events_cache: OrderedDict[str, Event] = OrderedDict()
        self._janitor: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            headers={"User-Agent": f"backchannel/{__version__}"})
        env = TaskEnv(self.settings, self.store, self._http)
        tasks = build_tasks(self.analyzer.task_names(), env)
        for task in tasks.values():
            warm_up = getattr(task, "warm_up", None)
            if warm_up is not None:
                started = time.monotonic()
                await warm_up()
                log.info("task %s ready in %.1f s", task.name, time.monotonic() - started)
        paused = self.store.paused()
        for name, task in tasks.items():
            lane = Lane(task, self.settings.service(name), self.store, self.metrics,
                        self._task_done, self._event)
            lane.paused = name in paused
            self.lanes[name] = lane
        self.responder.paused = "callbacks" in paused
        self._recover()
        for lane in self.lanes.values():
            lane.start()
        self.outbox.start()
        if self.settings.worker.retention_days > 0:
            self._janitor = asyncio.create_task(self._prune_loop(), name="worker:retention")
        await self.responder.start()
        await self.consumer.start()
        self.metrics.add_collector(self.collect_gauges)
        log.info("worker started: tasks %s, %d events pending, %d outbox items",
                 ", ".join(sorted(self.lanes)), self.store.pending_events(),
                 self.store.outbox_size())

    async def close(self, grace: float = 5.0) -> None:
        """Stop taking work, let in-flight calls finish (bounded), flush the outbox."""
        self.metrics.remove_collector(self.collect_gauges)
        await stop_feeding(self._janitor, (), 0)
        await self.consumer.close()
        for lane in self.lanes.values():
            await lane.close(grace)
        await self.responder.close(grace)
        await self.outbox.close(grace)
        if self._http is not None:
            await self._http.close()
        self.store.close()
        self.seen.close()

    async def _prune_loop(self) -> None:
        """Keep the store bounded: finished events older than the retention go, hourly."""
        while True:
            before = time.time() - self.settings.worker.retention_days * 86400
            removed = self.store.prune(before)
            if removed:
                log.info("retention: removed %d finished events older than %.1f days",
                         removed, self.settings.worker.retention_days)
            await asyncio.sleep(3600)

    def _recover(self) -> None:
        """Finish what a crash interrupted between 'all tasks ended' and 'finalized'."""
        rows = self.store.q(
            "SELECT e.id FROM events e WHERE e.state = 'pending' AND NOT EXISTS ("
            " SELECT 1 FROM tasks t WHERE t.event_id = e.id AND t.state = 'pending')")
        for (event_id,) in rows:
            self._finalize(event_id)
        if rows:
            log.info("recovered %d events whose tasks had all ended", len(rows))

    # ------------------------------------------------------------------ intake
    async def accept(self, event: Event) -> None:
        """Consumer handler: record the event and its tasks (idempotent by event id)."""
        self.metrics.inc("backchannel_events_in_total")
        names = self.analyzer.tasks_for(event.type)
        if names is None:
            if self.settings.worker.unknown_types == "ignore":
                self.store.accept(event.id, event.type, event.source, event.to_dict(), [],
                                  state="ignored")
                return
            if self.store.accept(event.id, event.type, event.source, event.to_dict(), [],
                                 state="deadletter"):
                self._deadletter(event.id, "unrouted",
                                 f"no route for event type {event.type!r}", None, 0,
                                 event.to_dict(), site=self._site_name(event.source))
            return
        unknown = [n for n in names if n not in self.lanes]
        if unknown:  # routes are validated at start; this guards a config race
            raise EventError(f"tasks {unknown} have no plug-in")
        pairs = [(n, n) for n in names]
        if self.store.accept(event.id, event.type, event.source, event.to_dict(), pairs):
            self._remember(event)
            if not pairs:
                self._finalize(event.id)
            for name in names:
                self.lanes[name].wake()

    async def invalid(self, item_id: str, raw: str, error: EventError) -> None:
        """An item on the events node that breaks the contract: a dead letter saying why."""
        self.metrics.inc("backchannel_events_invalid_total")
        subject = item_id or "(no id)"
        self._deadletter(subject, "invalid", str(error), None, 0, raw[:2000], site="?")

    # ------------------------------------------------------------------ finishing
    def _event(self, event_id: str) -> Event | None:
        event = self._events_cache.get(event_id)
        if event is not None:
            return event
        row = self.store.event(event_id)
        return event_from_doc(row.doc) if row else None

    def _remember(self, event: Event) -> None:
        self._events_cache[event.id] = event
        while len(self._events_cache) > 2048:
            self._events_cache.popitem(last=False)

    def _site_name(self, source: str) -> str:
        site = self.settings.site_by_source(source)
        return site.name if site else source

    def _task_done(self, event_id: str) -> None:
        tasks = self.store.tasks(event_id)
        if all(t.state != "pending" for t in tasks):
            self._finalize(event_id, tasks)

    def _finalize(self, event_id: str, tasks: list[TaskRow] | None = None) -> None:
        row = self.store.event(event_id)
        if row is None or row.state != "pending":
            return
        event = self._event(event_id)
        if event is None:
            return
        self._events_cache.pop(event_id, None)
        if tasks is None:
            tasks = self.store.tasks(event_id)
        now = time.time()
        ok = all(t.state == "ok" for t in tasks)
        status = "done" if ok else "failed"
        site = self.settings.site_by_source(event.source)
        site_name = site.name if site else event.source
        result = outputs.result_event(event, site_name, tasks, row.received_at, now)
        line = outputs.activity_line(event, site_name, tasks, "ok" if ok else "failed")
        items = [(self.settings.nodes.results, result.id, encode(result.to_dict()))]
        activity = self.settings.nodes.feed("activity")
        if "activity" in self.settings.nodes.feeds:
            items.append((activity, event.id, encode(outputs.activity_event(
                event.id, line, event.type, event.source, "ok" if ok else "failed").to_dict())))
        if event.type == "user.registered" and "signups" in self.settings.nodes.feeds:
            signup = outputs.signup_event(event, site_name, tasks,
                                          self.settings.worker.feed_personal_data)
            items.append((self.settings.nodes.feed("signups"), event.id,
                          encode(signup.to_dict())))
        with self.store.tx() as db:
            db.execute("UPDATE events SET state = ?, finished_at = ? WHERE id = ?",
                       (status, now, event_id))
            self.store.add_outbox(db, items)
            if site is not None and site.callback is not None:
                self.store.add_callback(db, event_id, site.name)
        if not ok:
            failed = [t for t in tasks if t.state != "ok"]
            reason = "; ".join(f"{t.task} failed after {t.attempts} attempts" for t in failed)
            self._deadletter(event_id, "task", reason, failed[0].last_error,
                             max(t.attempts for t in failed), None, site=site_name)
        self.metrics.inc("backchannel_events_done_total", {"status": status})
        self.metrics.observe("backchannel_pipeline_latency_seconds", now - row.received_at)
        self.outbox.wake()
        self.responder.wake()

    def _deadletter(self, subject: str, kind: str, reason: str, last_error: str | None,
                    attempts: int, original: Any, *, site: str) -> None:
        dl = outputs.deadletter_event(subject, kind, reason, last_error, attempts, original)
        items = [(self.settings.nodes.deadletters, dl.id, encode(dl.to_dict()))]
        if "activity" in self.settings.nodes.feeds:
            line = f"{site}: dead letter ({kind}) {subject[:40]}: {reason[:120]}"
            act = outputs.activity_event(f"{dl.id}.dead", line, kind, site, "deadletter")
            items.append((self.settings.nodes.feed("activity"), act.id, encode(act.to_dict())))
        with self.store.tx() as db:
            self.store.add_deadletter(db, subject, kind, reason, last_error, attempts)
            self.store.add_outbox(db, items)
        self.metrics.inc("backchannel_deadletters_total", {"kind": kind})
        log.warning("dead letter (%s) for %s: %s", kind, subject, reason)
        self.outbox.wake()

    def _callback_dead(self, event_id: str, reason: str, error: str, attempts: int) -> None:
        row = self.store.event(event_id)
        site = self._site_name(row.source) if row else "?"
        self._deadletter(event_id, "callback", reason, error, attempts, None, site=site)

    def _result_for(self, event_id: str) -> tuple[str, dict[str, Any]] | None:
        row = self.store.event(event_id)
        event = event_from_doc(row.doc) if row else None
        if row is None or event is None:
            return None
        tasks = self.store.tasks(event_id)
        site = self._site_name(row.source)
        result = outputs.result_event(event, site, tasks, row.received_at,
                                      row.finished_at or time.time())
        data = dict(result.data)
        data.pop("received_at", None)
        return event.type, data

    # ------------------------------------------------------------------ operations
    def retry_deadletter(self, dl_id: int) -> bool:
        """Run a dead letter's failed work again. False if it cannot be retried."""
        dl = self.store.deadletter(dl_id)
        if dl is None or dl.state != "active":
            return False
        if dl.kind == "task":
            dead = [t.task for t in self.store.tasks(dl.event_id) if t.state == "dead"]
            if not self.store.reset_tasks(dl.event_id, only_dead=True):
                return False
            for name in dead:
                if name in self.lanes:
                    # A retry says "the service is back": give it real calls at once
                    # rather than failing fast on what the breaker remembers.
                    self.lanes[name].breaker.clear()
            for lane in self.lanes.values():
                lane.wake()
        elif dl.kind == "callback":
            row = self.store.callback(dl.event_id)
            if row is None:
                return False
            with self.store.tx() as db:
                self.store.add_callback(db, dl.event_id, row.site)
            self.responder.wake()
        else:
            return False  # invalid or unrouted: nothing to run again
        self.store.set_deadletter_state(dl_id, "retried")
        return True

    def retry_all_deadletters(self) -> int:
        return sum(self.retry_deadletter(d.id) for d in self.store.deadletters(limit=100_000))

    def replay(self, since: float, type_glob: str | None = None) -> int:
        """Process again every event received since ``since`` (all its tasks)."""
        count = 0
        for row in self.store.events(type_glob=type_glob, since=since, limit=1_000_000):
            if row.state in ("done", "failed") and self.store.reset_tasks(row.id,
                                                                          only_dead=False):
                count += 1
        for lane in self.lanes.values():
            lane.wake()
        return count

    def pause(self, service: str) -> None:
        self._set_paused(service, True)

    def resume(self, service: str) -> None:
        self._set_paused(service, False)

    def services(self) -> list[str]:
        return [*sorted(self.lanes), "callbacks"]

    def _set_paused(self, service: str, paused: bool) -> None:
        if service == "callbacks":
            self.responder.paused = paused
            self.responder.wake()
        elif service in self.lanes:
            self.lanes[service].paused = paused
            if not paused:
                self.lanes[service].breaker.clear()
            self.lanes[service].wake()
        else:
            raise KeyError(service)
        self.store.set_paused(service, paused)
        log.info("service %s %s", service, "paused" if paused else "resumed")

    def _gauges(self, counts: dict[str, int]) -> tuple[int, dict[str, str], int]:
        in_flight = sum(len(lane.in_flight) for lane in self.lanes.values())
        breakers = {name: lane.breaker.state for name, lane in self.lanes.items()}
        for name, state in breakers.items():
            self.metrics.set("backchannel_breaker_open", 0.0 if state == "closed" else 1.0,
                             {"service": name})
        pending = counts.get("pending", 0)
        self.metrics.set("backchannel_queue_depth", pending)
        self.metrics.set("backchannel_in_flight", in_flight)
        return in_flight, breakers, pending

    def collect_gauges(self) -> None:
        """Metrics collector: queue depth, in flight and breaker states for each scrape."""
        try:
            self._gauges(self.store.counts())
        except StoreError as exc:
            log.warning("cannot read the worker store for /metrics: %s", exc)

    def snapshot(self) -> dict[str, Any]:
        """Numbers for status, metrics and the dashboard."""
        counts = self.store.counts()
        in_flight, breakers, pending = self._gauges(counts)
        return {
            "events": counts,
            "queue_depth": pending,
            "in_flight": in_flight,
            "outbox": self.store.outbox_size(),
            "deadletters": self.store.deadletter_count(),
            "breakers": breakers,
            "paused": sorted(self.store.paused()),
            "consumer": {"handed": self.consumer.stats.handed,
                         "invalid": self.consumer.stats.invalid,
                         "gaps": self.consumer.stats.gaps},
            "connected": self.conn.ready.is_set(),
            "uptime_s": time.time() - self.started_at,
        }
