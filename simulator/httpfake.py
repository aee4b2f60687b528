"""What every fake HTTP service of the simulator shares.

Why: the geocoder, the CRM, the mailing list and the demo site must behave alike where
tests look at them. Each one runs on a real loopback aiohttp server on port 0
(:class:`LocalServer`), suffers the same chaos before doing any work
(:func:`chaos_response`), counts its calls the same way (:class:`ServiceStats`, with an
awaitable :meth:`~ServiceStats.wait_until` so tests never sleep and hope), and reads
XML-RPC the same careful way (:func:`parse_xmlrpc`: no DTDs, no entities, size-capped by
aiohttp's ``client_max_size``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import xmlrpc.client
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree
from xml.parsers.expat import ExpatError

import defusedxml.ElementTree
from aiohttp import web

from simulator.chaos import ChaosControl, Verdict

log = logging.getLogger(__name__)

#: Largest request body the fakes accept (aiohttp answers 413 above it).
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class CallRecord:
    """One call a fake service received."""

    at: float  # time.monotonic() when it arrived
    method: str
    path: str
    status: int  # 0 when the connection was dropped on purpose
    ok: bool
    key: str | None = None  # the record id, query or event id it was about
    note: str = ""


@dataclass
class ServiceStats:
    """Counters of one fake service. ``records`` keeps the last write per key (upserts)."""

    name: str
    history_limit: int = 10_000
    calls: int = 0
    successes: int = 0
    failures: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    records: dict[str, Any] = field(default_factory=dict)
    writes: Counter[str] = field(default_factory=Counter)  # how often each key was written
    history: deque[CallRecord] = field(init=False)
    _changed: asyncio.Condition | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.history_limit)

    @property
    def duplicates(self) -> int:
        """Writes to a key that already had a record."""
        return sum(n - 1 for n in self.writes.values() if n > 1)

    def record(self, key: str, value: Any) -> bool:
        """Store ``value`` under ``key``; True if the key is new."""
        created = key not in self.records
        self.records[key] = value
        self.writes[key] += 1
        return created

    async def begin(self) -> None:
        self.calls += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        await self._notify()

    async def end(self, rec: CallRecord) -> None:
        self.in_flight -= 1
        if rec.ok:
            self.successes += 1
        else:
            self.failures += 1
        self.history.append(rec)
        await self._notify()

    async def _notify(self) -> None:
        cond = self._condition()
        async with cond:
            cond.notify_all()

    def calls_since(self, t0: float) -> list[CallRecord]:
        """Calls that arrived at or after ``t0`` (a ``time.monotonic()`` value)."""
        return [r for r in self.history if r.at >= t0]

    def reset(self) -> None:
        """Forget everything counted so far (records included)."""
        self.calls = self.successes = self.failures = 0
        self.peak_in_flight = self.in_flight
        self.records.clear()
        self.writes.clear()
        self.history.clear()

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def wait_until(
        self,
        predicate: Callable[[ServiceStats], bool],
        timeout: float = 5.0,
    ) -> None:
        """Return once ``predicate(self)`` holds (checked after every call); raise
        :class:`TimeoutError` after ``timeout`` seconds."""
        cond = self._condition()
        async with asyncio.timeout(timeout), cond:
            await cond.wait_for(lambda: predicate(self))


class LocalServer:
    """An aiohttp application served on a loopback port (0 = any free port)."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self._app = app
        self._host = host
        self._want_port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("server already started")
        # No access log (benchmarks send thousands of calls); short shutdown so a fake
        # with huge latency cannot hold up a test's teardown.
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._want_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        if not self.port:
            raise RuntimeError("server not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"


def _retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


async def chaos_response(
    control: ChaosControl, request: web.Request, closing: asyncio.Event
) -> tuple[Verdict, web.StreamResponse | None]:
    """Suffer the configured delay, then either ``None`` (serve normally) or the failure.

    A server shutting down cuts the delay short (``closing``) and answers 503, so
    teardown stays fast and nothing counts as served that the delay would have outlived.
    A "reset" verdict aborts the TCP connection; the returned response is never sent.
    """
    verdict = control.decide()
    if verdict.delay > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), verdict.delay)
        if closing.is_set():
            verdict = Verdict(verdict.delay, 503, reason="shutting down")
    if not verdict.fails:
        return verdict, None
    headers: dict[str, str] = {}
    if verdict.retry_after is not None:
        headers["Retry-After"] = _retry_after(verdict.retry_after)
    if verdict.location:
        headers["Location"] = verdict.location
    status = verdict.status or 503
    if verdict.reset and request.transport is not None:
        request.transport.abort()
        status = 0
    log.debug("%s: simulated %s (%s)", control.name, status or "reset", verdict.reason)
    body = {"error": f"simulated {verdict.reason}"}
    return verdict, web.json_response(body, status=status or 503, headers=headers)


Handler = Callable[[web.Request], Awaitable[tuple[web.StreamResponse, bool, str | None]]]


def guarded(
    control: ChaosControl, stats: ServiceStats, closing: asyncio.Event, handler: Handler
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap ``handler`` (returning response, ok, key) with chaos and counting."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        await stats.begin()
        response: web.StreamResponse | None = None
        ok, key, status, note = False, None, 500, ""
        try:
            verdict, response = await chaos_response(control, request, closing)
            if response is not None:
                status, note = (0 if verdict.reset else response.status), verdict.reason
                return response
            response, ok, key = await handler(request)
            status = response.status
            return response
        finally:
            await stats.end(CallRecord(at, request.method, request.path, status, ok, key, note))

    return wrapped


class XmlRpcError(Exception):
    """A request that is not a well-formed, safe XML-RPC call (answered with a fault)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_xmlrpc(body: bytes) -> tuple[str, tuple[Any, ...]]:
    """Method name and params of an XML-RPC call; refuses DTDs and entities first."""
    try:
        defusedxml.ElementTree.fromstring(body, forbid_dtd=True)
    except defusedxml.DefusedXmlException as exc:
        raise XmlRpcError(-32700, "DTDs and entities are not accepted") from exc
    except ElementTree.ParseError as exc:
        raise XmlRpcError(-32700, "not well-formed XML") from exc
    try:
        params, method = xmlrpc.client.loads(body, use_builtin_types=True)
    except (ExpatError, xmlrpc.client.Error, ValueError, TypeError, IndexError) as exc:
        raise XmlRpcError(-32700, "not a valid XML-RPC call") from exc
    if not method:
        raise XmlRpcError(-32600, "no methodName")
    return method, params


def xmlrpc_result(value: Any) -> web.Response:
    body = xmlrpc.client.dumps((value,), methodresponse=True, encoding="utf-8")
    return web.Response(body=body.encode("utf-8"), content_type="text/xml", charset="utf-8")


def xmlrpc_fault(code: int, message: str) -> web.Response:
    body = xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), encoding="utf-8")
    return web.Response(body=body.encode("utf-8"), content_type="text/xml", charset="utf-8")
