"""A stand-in for a registered web site that receives backchannel's callbacks.

Why: the end of the pipeline is a site that gets told what was found ("user 42 lives in
Lyon"). The demo shows that site's users on a map; tests assert that every event was
applied exactly once however often it was delivered. The site speaks both callback
protocols backchannel offers:

- XML-RPC, as Drupal's Services module did: ``POST /xmlrpc``, method (default
  ``backchannel.result``) with params ``(event_id, event_type, result_struct)``.
- Standard Webhooks: ``POST /webhook`` with a JSON body and ``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature`` headers, checked here with our own small
  verifier (so it checks the sender's implementation rather than sharing it).

It dedupes by event id (the idempotency key: XML-RPC's first param, the webhook's
``webhook-id``), can be told to misbehave like any fake service (its own
:class:`~simulator.chaos.ChaosControl`: 503s, 410 Gone, redirects, resets, latency),
and shows its users on ``/`` (a self-refreshing page, no external assets) and
``/users.json``. The result struct is read tolerantly; see :func:`extract_user`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from simulator.chaos import ChaosControl
from simulator.httpfake import (
    MAX_BODY,
    Handler,
    LocalServer,
    ServiceStats,
    XmlRpcError,
    guarded,
    parse_xmlrpc,
    xmlrpc_fault,
    xmlrpc_result,
)
from simulator.sitepage import render_page

log = logging.getLogger(__name__)

DEFAULT_METHOD = "backchannel.result"
WEBHOOK_TOLERANCE = 300.0

Outcome = tuple[web.StreamResponse, bool, str | None]


# -- Standard Webhooks, receiving side ---------------------------------------------------

def webhook_key(secret: str) -> bytes:
    """The HMAC key: base64-decoded after ``whsec_``, else the secret's UTF-8 bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    return secret.encode("utf-8")


def webhook_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    mac = hmac.new(webhook_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def webhook_problem(
    secret: str, headers: Mapping[str, str], body: bytes,
    *, tolerance: float = WEBHOOK_TOLERANCE, now: float | None = None,
) -> str | None:
    """Why this webhook is not authentic and fresh, or ``None`` if it is."""
    msg_id = headers.get("webhook-id", "")
    raw_ts = headers.get("webhook-timestamp", "")
    offered = headers.get("webhook-signature", "")
    if not (msg_id and raw_ts and offered):
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        timestamp = int(raw_ts)
    except ValueError:
        return "webhook-timestamp is not an integer"
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return "webhook-timestamp is outside the tolerance"
    try:
        expected = webhook_signature(secret, msg_id, timestamp, body).encode()
    except (binascii.Error, ValueError):
        return "the site's secret is not valid whsec_ base64"
    for candidate in offered.split():
        if candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected):
            return None
    return "no matching v1 signature"


# -- reading a result, tolerantly --------------------------------------------------------

def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _task(result: Mapping[str, Any], name: str) -> Any:
    tasks = result.get("tasks")
    if isinstance(tasks, Mapping):
        return tasks.get(name)
    if isinstance(tasks, list):
        for item in tasks:
            if isinstance(item, Mapping) and name in (item.get("name"), item.get("task")):
                return item
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _location(result: Mapping[str, Any]) -> dict[str, Any] | None:
    task = _task(result, "geocode")
    for geo in (_dig(task, "result"), task, _dig(result, "geocode", "result"),
                result.get("geocode"), result.get("location")):
        if not isinstance(geo, Mapping):
            continue
        lat = _float(geo.get("latitude", geo.get("lat")))
        lon = _float(geo.get("longitude", geo.get("lon", geo.get("lng"))))
        if lat is None or lon is None:
            continue
        label = geo.get("display_name") or geo.get("address") or geo.get("name") or ""
        return {"latitude": lat, "longitude": lon, "display_name": str(label)}
    return None


def extract_user(result: Any) -> dict[str, Any]:
    """What the site learns from one result: user id, name, location (any may be absent).

    Looks for the original event data under ``data``, ``event.data``, ``original.data``,
    ``original``, ``input``, ``data.data`` (a CloudEvent around a result) or the result
    itself, and for the location (in the result or its ``data``) under
    ``tasks.geocode.result`` (or ``tasks`` as a list of ``{"name": "geocode", ...}``),
    ``geocode`` or ``location``, with ``latitude``/``longitude`` or ``lat``/``lon``.
    """
    if not isinstance(result, Mapping):
        return {"user_id": None, "name": None, "location": None}
    user_id: Any = None
    name: Any = None
    for data in (result.get("data"), _dig(result, "event", "data"),
                 _dig(result, "original", "data"), result.get("original"),
                 result.get("input"), _dig(result, "data", "data"), result):
        if isinstance(data, Mapping):
            user_id = user_id if user_id is not None else data.get("user_id")
            name = name if name is not None else data.get("name")
    # A CloudEvent wraps the result in "data"; look there too.
    inner = result.get("data")
    location = _location(result) or (_location(inner) if isinstance(inner, Mapping) else None)
    return {
        "user_id": None if user_id is None else str(user_id),
        "name": None if name is None else str(name),
        "location": location,
    }


class DemoSite:
    """A fake registered site receiving callbacks. ``async with DemoSite(secret=...) as site``.

    ``received`` counts authentic, well-formed callbacks; each event id is applied once
    (``applied[event_id]``), repeats count in ``duplicates``; ``rejected`` counts
    forged, stale or malformed ones. So ``received == len(applied) + duplicates``.
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        method: str = DEFAULT_METHOD,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        tolerance: float = WEBHOOK_TOLERANCE,
        title: str = "Demo site",
        refresh: float = 2.0,
    ) -> None:
        self.secret = secret
        self.method = method
        self.tolerance = tolerance
        self.title = title
        self.refresh = refresh
        self.control = ChaosControl("site", seed=seed)
        self.stats = ServiceStats("site")
        self.applied: dict[str, Any] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.received = 0
        self.duplicates = 0
        self.rejected = 0
        self._changed: asyncio.Condition | None = None
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/xmlrpc", self._guard(self._xmlrpc))
        app.router.add_post("/webhook", self._guard(self._webhook))
        app.router.add_get("/", self._page)
        app.router.add_get("/users.json", self._users_json)
        self._server = LocalServer(app, host, port)

    def _guard(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        return guarded(self.control, self.stats, self._closing, handler)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> Self:
        self._closing.clear()
        await self._server.start()
        self.control.restart_clock()
        log.info("demo site listening on %s", self.url)
        return self

    async def stop(self) -> None:
        self._closing.set()
        await self._server.stop()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def xmlrpc_url(self) -> str:
        return f"{self.url}/xmlrpc"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhook"

    # -- waiting ---------------------------------------------------------------------

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        cond = self._condition()
        async with cond:
            cond.notify_all()

    async def wait_until(
        self, predicate: Callable[[DemoSite], bool], timeout: float = 5.0
    ) -> None:
        """Return once ``predicate(site)`` holds; :class:`TimeoutError` after ``timeout``."""
        cond = self._condition()
        async with asyncio.timeout(timeout), cond:
            await cond.wait_for(lambda: predicate(self))

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        """Return once ``count`` distinct events have been applied."""
        await self.wait_until(lambda site: len(site.applied) >= count, timeout)

    # -- applying --------------------------------------------------------------------

    async def apply(self, event_id: str, event_type: str, result: Any, via: str) -> bool:
        """Apply one authentic callback; False if this event id was applied before."""
        self.received += 1
        if event_id in self.applied:
            self.duplicates += 1
            log.info("demo site: duplicate %s via %s ignored", event_id, via)
            await self._notify()
            return False
        user = extract_user(result)
        entry = {"event_id": event_id, "event_type": event_type, "via": via,
                 "at": time.time(), "seq": len(self.applied) + 1, **user}
        self.applied[event_id] = entry
        if user["user_id"] is not None or user["name"] is not None:
            key = user["user_id"] if user["user_id"] is not None else f"event:{event_id}"
            # A later event without a name or location keeps what the site knew.
            previous = self.users.get(key, {})
            self.users[key] = {**previous, **{k: v for k, v in entry.items()
                                              if v is not None or k not in previous}}
        log.info("demo site: applied %s (%s) via %s", event_id, event_type, via)
        await self._notify()
        return True

    async def _reject(self, response: web.Response, reason: str) -> Outcome:
        self.rejected += 1
        log.info("demo site: rejected a callback: %s", reason)
        await self._notify()
        return response, False, None

    async def _xmlrpc(self, request: web.Request) -> Outcome:
        try:
            method, params = parse_xmlrpc(await request.read())
        except XmlRpcError as exc:
            return await self._reject(xmlrpc_fault(exc.code, str(exc)), str(exc))
        if method != self.method:
            fault = xmlrpc_fault(-32601, f"unknown method {method!r}")
            return await self._reject(fault, "unknown method")
        if len(params) != 3 or not isinstance(params[0], str) or not params[0]:
            fault = xmlrpc_fault(-32602, "expected (event_id, event_type, result)")
            return await self._reject(fault, "bad params")
        event_id, event_type, result = params
        fresh = await self.apply(event_id, str(event_type), result, "xmlrpc")
        answer = {"event_id": event_id, "status": "applied" if fresh else "duplicate"}
        return xmlrpc_result(answer), True, event_id

    async def _webhook(self, request: web.Request) -> Outcome:
        body = await request.read()
        if self.secret is not None:
            problem = webhook_problem(self.secret, request.headers, body,
                                      tolerance=self.tolerance)
            if problem is not None:
                return await self._reject(
                    web.json_response({"error": "signature verification failed"}, status=401),
                    problem,
                )
        event_id = request.headers.get("webhook-id", "")
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        if not event_id or not isinstance(payload, dict):
            bad = web.json_response({"error": "need webhook-id and a JSON object"}, status=400)
            return await self._reject(bad, "malformed")
        event_type = payload.get("type") if isinstance(payload.get("type"), str) else ""
        fresh = await self.apply(event_id, str(event_type), payload, "webhook")
        answer = {"event_id": event_id, "status": "applied" if fresh else "duplicate"}
        return web.json_response(answer), True, event_id

    # -- showing ---------------------------------------------------------------------

    def users_list(self) -> list[dict[str, Any]]:
        """Users, most recently updated first."""
        return sorted(self.users.values(), key=lambda u: int(u["seq"]), reverse=True)

    async def _users_json(self, request: web.Request) -> web.Response:
        return web.json_response(self.users_list())

    async def _page(self, request: web.Request) -> web.Response:
        counters = {"received": self.received, "applied": len(self.applied),
                    "duplicates": self.duplicates, "rejected": self.rejected,
                    "failed (simulated)": self.stats.failures}
        html = render_page(self.title, self.users_list(), counters, self.refresh)
        return web.Response(text=html, content_type="text/html", charset="utf-8")
