"""Operations endpoints: health, readiness, metrics, status, and the fate of one event.

Why separate liveness from readiness: ``/healthz`` answers while the process runs (a
supervisor restarts it only when it is wedged), ``/readyz`` only while the XMPP session
is up (a load balancer sends sites elsewhere instead of collecting 503s).

``GET /v1/events/{id}`` reads the nodes, not a database: the events node says the event
was received, the results node that it is done (or failed, with the result), the
dead-letters node that it was given up on (with the reason). Between received and done,
the worker's store (read-only, when it is on this machine: :mod:`workers.progress`) says
the event is in progress and how far each task got. A site sees only its own events;
any other id is a 404, whether it exists or not.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from backchannel.config import Settings
from backchannel.errors import EventError, XmppError
from backchannel.metrics import Metrics
from gateway.auth import Authenticator
from gateway.problems import Problem
from pubsub.client import Item, PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import ID_RE, Event, from_element

log = logging.getLogger(__name__)

StatusProvider = Callable[[], Awaitable[Mapping[str, Any]]]
# The worker's view of one event (workers.progress.StoreProgress), None if not taken.
ProgressProvider = Callable[[str], Mapping[str, Any] | None]
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Ops:
    """Handlers of the operations endpoints."""

    def __init__(self, settings: Settings, conn: XmppConnection, pubsub: PubSub,
                 auth: Authenticator, metrics: Metrics,
                 status_provider: StatusProvider | None = None,
                 progress: ProgressProvider | None = None) -> None:
        self.settings = settings
        self.progress = progress
        self.conn = conn
        self.pubsub = pubsub
        self.auth = auth
        self.metrics = metrics
        self.status_provider = status_provider

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.conn.ready.is_set():
            return web.json_response({"status": "ready", "xmpp": "connected"})
        return web.json_response({"status": "not ready", "xmpp": "disconnected"}, status=503,
                                 headers={"Retry-After": "5"})

    async def metrics_text(self, request: web.Request) -> web.Response:
        self.metrics.set("backchannel_gateway_xmpp_connected",
                         1.0 if self.conn.ready.is_set() else 0.0)
        return web.Response(body=self.metrics.render().encode("utf-8"),
                            headers={"Content-Type": METRICS_CONTENT_TYPE})

    def own_status(self) -> dict[str, Any]:
        connected = self.conn.ready.is_set()
        return {
            "state": "running" if connected else "degraded",
            "detail": "XMPP session up" if connected else "XMPP session down; ingest answers 503",
        }

    async def status(self, request: web.Request) -> web.Response:
        minimal: dict[str, Any] = {
            "components": {
                "gateway": self.own_status(),
                "xmpp": {"state": "running" if self.conn.ready.is_set() else "stopped",
                         "detail": f"{self.settings.xmpp.host}:{self.settings.xmpp.port}"},
            },
            "events_total": int(self.metrics.total(
                "backchannel_ingest_events_published_total")),
        }
        if self.status_provider is None:
            return web.json_response(minimal)
        try:
            provided = dict(await self.status_provider())
        except Exception:
            log.exception("status provider failed; answering the gateway's own status")
            return web.json_response(minimal)
        components = dict(provided.get("components") or {})
        components.setdefault("gateway", minimal["components"]["gateway"])
        provided["components"] = components
        try:
            text = json.dumps(provided, default=str)
        except (TypeError, ValueError):
            log.exception("status provider returned something that is not JSON")
            return web.json_response(minimal)
        return web.Response(text=text, content_type="application/json")

    # ------------------------------------------------------------------ event status
    async def event_status(self, request: web.Request) -> web.Response:
        body = await request.read()
        site = self.auth.authenticate(request.headers, body)
        event_id = request.match_info["id"]
        if not ID_RE.match(event_id):
            raise Problem(404, "unknown-event", "no such event")
        nodes = self.settings.nodes
        try:
            original, result, dead = await asyncio.gather(
                self.pubsub.item(nodes.events, event_id),
                self.pubsub.item(nodes.results, event_id),
                self.pubsub.item(nodes.deadletters, event_id),
            )
        except XmppError as exc:
            raise Problem(503, "xmpp-unavailable",
                          "cannot read the event's state from the XMPP server right now",
                          headers={"Retry-After": "5"}) from exc
        event = self._event(original)
        if event is None or event.source != site.source:
            # Someone else's event, or gone from the node: the same answer either way.
            raise Problem(404, "unknown-event", f"no event {event_id!r} from site "
                          f"{site.name!r} is retained")
        answer: dict[str, Any] = {"id": event_id, "type": event.type, "state": "received"}
        dead_event = self._event(dead)
        result_event = self._event(result)
        if dead_event is not None:
            data = dead_event.data if isinstance(dead_event.data, dict) else {}
            answer["state"] = "dead-lettered"
            answer["deadletter"] = {k: data.get(k) for k in ("reason", "last_error", "attempts")}
            answer["time"] = dead_event.time
        elif result_event is not None:
            data = result_event.data if isinstance(result_event.data, dict) else {}
            answer["state"] = "failed" if data.get("status") == "failed" else "done"
            answer["result"] = result_event.data
            answer["time"] = result_event.time
        elif self.progress is not None:
            progress = self.progress(event_id)
            if progress is not None and progress.get("state") == "pending":
                answer["state"] = "in progress"
                answer["tasks"] = progress.get("tasks", [])
        return web.json_response(answer)

    def _event(self, item: Item | None) -> Event | None:
        if item is None:
            return None
        try:
            return from_element(item.payload, max_bytes=self.settings.max_event_bytes * 4)
        except EventError as exc:
            log.warning("unreadable item %s while answering a status query: %s", item.id, exc)
            return None
