"""``POST /v1/events``: one HTTP request in, events stored on the XMPP server, 202 out.

Why the answer waits for the server: 202 means "stored on the events node", the moment
an event counts as accepted (see :mod:`pubsub.publisher`). Everything that can be checked
before that is checked first, cheapest first, and the whole request is refused if any
event in it is wrong, so a site never has to work out which half of a batch got in:

1. body size against ``max_batch * max_event_bytes`` (413) without reading past it;
2. who sent it (:mod:`gateway.auth`, 401) - nothing else is said to strangers;
3. media type (415), JSON (400), shape and batch size (400, 413, 422);
4. per event: size (413), the CloudEvents contract (422), ``source`` equal to the
   authenticated site's (403);
5. publish, pipelined on the one XMPP stream in request order. If the server cannot be
   reached or does not answer in time the answer is 503 with ``Retry-After`` and, for a
   batch, which ids were stored, which were not, and which are unknown (timed out).
   Sending the same batch again is safe: event ids make it idempotent downstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from aiohttp import web

from backchannel.config import Settings, Site
from backchannel.errors import (
    EventError,
    EventTooLarge,
    NotConnected,
    XmppError,
    XmppRefused,
    XmppTimeout,
)
from backchannel.metrics import Metrics
from gateway.auth import Authenticator
from gateway.problems import Problem
from pubsub.envelope import Event, validate
from pubsub.publisher import Publisher

log = logging.getLogger(__name__)

JSON_TYPES = frozenset({"application/json", "application/cloudevents+json",
                        "application/cloudevents-batch+json"})
RETRY_AFTER = "5"
# JSON strings may hold code points that XML 1.0 forbids (json.dumps already escapes the
# C0 controls); one of them on the XMPP stream would make the server close it.
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")

REQUESTS = "backchannel_ingest_requests_total"
LATENCY = "backchannel_ingest_latency_seconds"
PUBLISHED = "backchannel_ingest_events_published_total"
REJECTED = "backchannel_ingest_events_rejected_total"


def describe_metrics(metrics: Metrics) -> None:
    metrics.describe(REQUESTS, "counter", "HTTP ingest requests by response status")
    metrics.describe(LATENCY, "histogram",
                     "Time from request to answer of POST /v1/events, in seconds")
    metrics.describe(PUBLISHED, "counter", "Events stored on the events node by the gateway")
    metrics.describe(REJECTED, "counter", "Events refused by the gateway, by reason")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


class Ingest:
    """The ``POST /v1/events`` handler."""

    def __init__(self, settings: Settings, publisher: Publisher, auth: Authenticator,
                 metrics: Metrics, *, publish_timeout: float | None = None) -> None:
        self.settings = settings
        self.publisher = publisher
        self.auth = auth
        self.metrics = metrics
        self.node = settings.nodes.events
        self.max_batch = settings.gateway.max_batch
        self.max_event_bytes = settings.max_event_bytes
        self.max_body = settings.gateway.max_batch * settings.max_event_bytes
        self.publish_timeout = publish_timeout or settings.xmpp.request_timeout
        describe_metrics(metrics)

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await self._handle(request)
            status = response.status
            return response
        except Problem as problem:
            status = problem.status
            raise
        finally:
            self.metrics.inc(REQUESTS, {"status": str(status)})
            self.metrics.observe(LATENCY, time.perf_counter() - started)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await self._read_body(request)
        site = self.auth.authenticate(request.headers, body)
        self._check_media_type(request)
        docs, batch = self._parse(body)
        events = self._check_events(docs, site)
        ids = await self._publish(events, site, batch)
        log.info("accepted %d event(s) from site %s: %s", len(ids), site.name,
                 ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else ""))
        return web.json_response({"ids": ids} if batch else {"id": ids[0]}, status=202)

    # ------------------------------------------------------------------ reading
    async def _read_body(self, request: web.Request) -> bytes:
        declared = request.content_length
        if declared is not None and declared > self.max_body:
            raise self._too_large(declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = await request.content.read(65536)
            except ConnectionError:  # the client went away before the whole body came
                raise Problem(400, "body-incomplete", "the connection closed before the "
                              "whole request body arrived") from None
            if not chunk:
                break
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large(size, at_least=True)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, size: int, at_least: bool = False) -> Problem:
        return Problem(
            413, "body-too-large",
            f"request body is {'more than ' if at_least else ''}{size} bytes; the limit is "
            f"{self.max_body} ({self.max_batch} events of at most {self.max_event_bytes} "
            "bytes)",
        )

    @staticmethod
    def _check_media_type(request: web.Request) -> None:
        kind = request.content_type
        if kind not in JSON_TYPES:
            raise Problem(415, "unsupported-media-type",
                          f"Content-Type must be application/json, got {kind[:80]!r}",
                          headers={"Accept-Post": "application/json"})
        charset = request.charset
        if charset is not None and charset.lower().replace("-", "") != "utf8":
            raise Problem(415, "unsupported-media-type",
                          f"the body must be UTF-8, got charset={charset[:40]!r}")

    # ------------------------------------------------------------------ parsing
    def _parse(self, body: bytes) -> tuple[list[Any], bool]:
        """The event documents and whether the request was a batch."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Problem(400, "malformed-json",
                          f"body is not UTF-8 (bad byte at offset {exc.start})") from None
        try:
            doc = json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise Problem(400, "malformed-json",
                          f"body is not well-formed JSON: {exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}") from None
        except RecursionError:
            raise Problem(400, "malformed-json", "body JSON is nested too deeply") from None
        except ValueError as exc:  # NaN/Infinity, integers beyond Python's digit limit
            raise Problem(400, "malformed-json", f"body is not valid JSON: {exc}"[:200]
                          ) from None
        if isinstance(doc, list):
            docs, batch = doc, True
        elif isinstance(doc, dict) and "events" in doc and "specversion" not in doc:
            if not isinstance(doc["events"], list):
                raise Problem(422, "invalid-batch",
                              "'events' must be an array of CloudEvent objects")
            extra = sorted(k for k in doc if k != "events")
            if extra:
                raise Problem(422, "invalid-batch",
                              f"a batch object holds only 'events'; unexpected {extra[0][:40]!r}")
            docs, batch = doc["events"], True
        elif isinstance(doc, dict):
            docs, batch = [doc], False
        else:
            raise Problem(422, "contract-violation",
                          "body must be a CloudEvent object, an array of them, or "
                          "{\"events\": [...]}")
        if batch and not docs:
            raise Problem(422, "invalid-batch", "batch is empty")
        if len(docs) > self.max_batch:
            raise Problem(413, "batch-too-large",
                          f"batch has {len(docs)} events; the limit is {self.max_batch}")
        return docs, batch

    def _check_events(self, docs: Sequence[Any], site: Site) -> list[Event]:
        events: list[Event] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        for index, doc in enumerate(docs):
            where = f"events[{index}]: " if len(docs) > 1 else ""
            try:
                text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
                bad = _NOT_XML.search(text)
                if bad is not None:
                    raise EventError(f"event contains U+{ord(bad.group()):04X}, which XMPP "
                                     "cannot carry (not an XML character)")
                size = len(text.encode("utf-8"))
                if size > self.max_event_bytes:
                    raise EventTooLarge(f"event is {size} bytes; the limit is "
                                        f"{self.max_event_bytes}")
                event = validate(doc)
            except EventTooLarge as exc:
                errors.append({"index": index, "status": 413, "kind": "event-too-large",
                               "detail": where + str(exc)})
                continue
            except EventError as exc:
                errors.append({"index": index, "status": 422, "kind": "contract-violation",
                               "detail": where + str(exc)})
                continue
            except (ValueError, RecursionError):
                errors.append({"index": index, "status": 422, "kind": "contract-violation",
                               "detail": where + "event is not representable as JSON"})
                continue
            if event.source != site.source:
                errors.append({
                    "index": index, "status": 403, "kind": "source-mismatch",
                    "detail": f"{where}source {event.source[:80]!r} is not the source of "
                              f"site {site.name!r} ({site.source!r})",
                })
                continue
            if event.id in seen:
                errors.append({"index": index, "status": 422, "kind": "duplicate-id",
                               "detail": f"{where}id {event.id!r} appears twice in the batch"})
                continue
            seen.add(event.id)
            events.append(event)
        if errors:
            for error in errors:
                self.metrics.inc(REJECTED, {"reason": str(error["kind"])})
            first = errors[0]
            extra = ({"errors": [{k: e[k] for k in ("index", "status", "detail")}
                                 for e in errors]} if len(docs) > 1 else {})
            raise Problem(int(first["status"]), str(first["kind"]), str(first["detail"]),
                          extra=extra)
        return events

    # ------------------------------------------------------------------ publishing
    async def _publish(self, events: list[Event], site: Site, batch: bool) -> list[str]:
        if not self.publisher.pubsub.conn.ready.is_set():
            self.metrics.inc(REJECTED, {"reason": "not-connected"})
            raise Problem(503, "xmpp-unavailable",
                          "the gateway is not connected to the XMPP server right now; "
                          "nothing was stored, retry later",
                          headers={"Retry-After": RETRY_AFTER},
                          extra={"stored": [], "not_stored": [e.id for e in events],
                                 "unknown": []} if batch else None)
        # Tasks are created in order and each writes its IQ before its first suspension,
        # so the server receives (and stores) the batch in request order.
        results = await asyncio.gather(
            *(self.publisher.publish(self.node, e, timeout=self.publish_timeout,
                                     wait_connected=0.0) for e in events),
            return_exceptions=True,
        )
        stored: list[str] = []
        not_stored: list[str] = []
        unknown: list[str] = []
        first_error: BaseException | None = None
        for event, result in zip(events, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                first_error = first_error or result
                (unknown if isinstance(result, XmppTimeout) else not_stored).append(event.id)
            else:
                stored.append(event.id)
        if stored:
            self.metrics.inc(PUBLISHED, value=float(len(stored)))
        if first_error is None:
            return stored
        self._publish_failed(first_error, site, batch, stored, not_stored, unknown)

    def _publish_failed(self, error: BaseException, site: Site, batch: bool,
                        stored: list[str], not_stored: list[str], unknown: list[str]
                        ) -> NoReturn:
        self.metrics.inc(REJECTED, {"reason": "publish-failed"},
                         value=float(len(not_stored) + len(unknown)))
        log.warning("publish for site %s failed: %s (stored %d, not stored %d, unknown %d)",
                    site.name, error, len(stored), len(not_stored), len(unknown))
        extra = ({"stored": stored, "not_stored": not_stored, "unknown": unknown}
                 if batch else None)
        retry = {"Retry-After": RETRY_AFTER}
        if isinstance(error, XmppTimeout):
            raise Problem(503, "xmpp-timeout",
                          "the XMPP server did not confirm the event(s) in time; they may or "
                          "may not be stored: send the same request again (event ids make "
                          "it safe)", headers=retry, extra=extra)
        if isinstance(error, NotConnected):
            raise Problem(503, "xmpp-unavailable",
                          "the connection to the XMPP server dropped before it confirmed "
                          "the event(s); send the same request again", headers=retry,
                          extra=extra)
        if isinstance(error, XmppRefused):
            raise Problem(502, "xmpp-refused",
                          f"the XMPP server refused the event(s) ({error.condition}); "
                          "this is a gateway configuration problem, tell its operators",
                          extra=extra)
        if isinstance(error, EventTooLarge):
            raise Problem(413, "event-too-large", str(error), extra=extra)
        if isinstance(error, XmppError):
            raise Problem(503, "xmpp-unavailable", "the XMPP server could not be reached; "
                          "send the same request again", headers=retry, extra=extra)
        raise error
