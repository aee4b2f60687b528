"""Calling a site back: one guarded, signed, size-capped HTTP request per attempt.

:class:`CallbackClient` owns one aiohttp session for the responder and exposes a single
verb, :meth:`CallbackClient.deliver`. It makes one attempt and says how it went; the
responder decides when to try again, with :func:`next_delay`.

How an answer is classified (Standard Webhooks' rules, applied to XML-RPC too):

- 2xx (and, for XML-RPC, a response that is not a fault): delivered;
- 410 Gone: :class:`CallbackRefused`, stop sending to this endpoint;
- other 4xx except 408 and 429: :class:`CallbackRefused`, the request itself is wrong;
- 3xx: :class:`CallbackError`; redirects are never followed (they could point anywhere);
- 408, 429, 5xx, timeouts, connection errors: :class:`CallbackError`, with
  ``retry_after`` when the site sent a Retry-After header.

The event id travels as the idempotency key (``webhook-id``, and ``Idempotency-Key`` on
both protocols), identical on every attempt, so at-least-once delivery has exactly-once
effects at a site that checks it.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
from yarl import URL

from backchannel import __version__
from backchannel.config import CallbackSettings
from backchannel.errors import CallbackError, CallbackRefused

from .guard import GuardedResolver, check_destination, describe
from .webhook import build_headers
from .xmlrpc import build_call, parse_response

log = logging.getLogger(__name__)

USER_AGENT = f"backchannel/{__version__}"
EXCERPT_CHARS = 200
EXCERPT_BYTES = EXCERPT_CHARS * 4  # enough for 200 characters of UTF-8

#: Base delay before attempt n (index n - 1): now, 5 s, 30 s, 2 min, 10 min, 30 min, 1 h,
#: 2 h, 5 h, then every 10 h. Close to Standard Webhooks' example schedule.
SCHEDULE: tuple[float, ...] = (0, 5, 30, 120, 600, 1800, 3600, 7200, 18000, 36000)
JITTER = 0.2
#: A Retry-After longer than this is treated as this (a site cannot park us for a month).
MAX_RETRY_AFTER = 86400.0


def backoff_schedule(attempt: int) -> float:
    """Base delay in seconds before attempt number ``attempt`` (1 = the first, sent now)."""
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    return SCHEDULE[min(attempt, len(SCHEDULE)) - 1]


def next_delay(attempt: int, *, scale: float = 1.0, retry_after: float | None = None) -> float:
    """Seconds to wait after attempt ``attempt`` failed, before attempt ``attempt + 1``.

    The schedule's delay with +-20 % jitter (so many failed callbacks do not come back in
    step), or the site's Retry-After if that is longer (capped at one day). ``scale``
    compresses time for tests and the demo; it applies to Retry-After as well.
    """
    if scale < 0:
        raise ValueError(f"scale must not be negative, got {scale}")
    base = backoff_schedule(attempt + 1)
    delay = base * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter, not crypto
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay * scale


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone also says yes to "²" and "٣"
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(frozen=True)
class DeliveryReport:
    """A delivered callback: the site's status, how long it took, the start of its answer."""

    status: int
    duration_ms: float
    response_excerpt: str


def _excerpt(body: bytes) -> str:
    text = body[:EXCERPT_BYTES].decode("utf-8", "replace")
    return text[:EXCERPT_CHARS]


async def _read_capped(response: aiohttp.ClientResponse, limit: int, *, strict: bool) -> bytes:
    """The response body, never holding more than ``limit`` bytes of it.

    ``strict``: a longer body is an error (the answer of a successful call must be read
    whole). Otherwise (an error status, read for its excerpt only) it is cut short.
    """
    declared = response.content_length
    if strict and declared is not None and declared > limit:
        raise CallbackError(f"response larger than {limit} bytes (Content-Length {declared})")
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await response.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        if strict:
            raise CallbackError(f"response larger than {limit} bytes")
        return b"".join(chunks)[:limit]
    return b"".join(chunks)


class CallbackClient:
    """Delivers results to sites. Use as ``async with CallbackClient() as client``.

    One session (connection pool, guarded resolver) serves every site; it is opened by
    ``__aenter__`` and closed by ``__aexit__``, and the client refuses use after that.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        if self._session is not None or self._closed:
            raise RuntimeError("a CallbackClient can be opened only once")
        self._resolver = GuardedResolver()
        connector = aiohttp.TCPConnector(resolver=self._resolver, limit=100, limit_per_host=8)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            # A compressed answer would be inflated before our size cap sees it.
            auto_decompress=False,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session (idempotent)."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open_session(self) -> tuple[aiohttp.ClientSession, GuardedResolver]:
        if self._session is None or self._resolver is None:
            state = "closed" if self._closed else "not opened"
            raise RuntimeError(f"CallbackClient is {state}; use 'async with CallbackClient()'")
        return self._session, self._resolver

    async def deliver(
        self,
        callback: CallbackSettings,
        *,
        event_id: str,
        event_type: str,
        result: Mapping[str, Any],
        attempt: int,
    ) -> DeliveryReport:
        """Make one delivery attempt of ``result`` to the site's registered endpoint.

        Returns a :class:`DeliveryReport` when the site accepted it; raises
        :class:`CallbackRefused` when it must not be sent again and
        :class:`CallbackError` (with ``retry_after`` if the site asked) when a later
        attempt may succeed.
        """
        session, resolver = self._open_session()
        await check_destination(
            callback.url, allowed_url=callback.url, allow_private=callback.allow_private
        )
        target = URL(callback.url)
        if callback.allow_private and target.host:
            resolver.allow_private(target.host)
        where = describe(target)

        headers = {"Idempotency-Key": event_id}
        if callback.protocol == "xmlrpc":
            body = build_call(callback.method, event_id, event_type, result)
            headers["Content-Type"] = "text/xml; charset=utf-8"
        else:
            try:
                body = json.dumps(
                    {"id": event_id, "type": event_type, "result": result},
                    ensure_ascii=False,
                    separators=(",", ":"),
                ).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise CallbackRefused(f"result of {event_id} is not JSON: {exc}") from exc
            headers["Content-Type"] = "application/json"
            headers.update(build_headers(callback.secret.reveal(), event_id, body))

        timeout = aiohttp.ClientTimeout(total=callback.timeout)
        started = time.monotonic()
        try:
            async with session.post(
                callback.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                payload = await _read_capped(
                    response,
                    callback.max_response_bytes
                    if 200 <= status < 300
                    else min(callback.max_response_bytes, EXCERPT_BYTES),
                    strict=200 <= status < 300,
                )
        except CallbackError as exc:
            # Oversize answers, or the guarded resolver refusing an address.
            log.info("callback %s attempt %d to %s failed: %s", event_id, attempt, where, exc)
            raise
        except TimeoutError as exc:
            log.info("callback %s attempt %d to %s timed out", event_id, attempt, where)
            raise CallbackError(
                f"site {where} did not answer within {callback.timeout:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            log.info(
                "callback %s attempt %d to %s failed: %s", event_id, attempt, where,
                type(exc).__name__,
            )
            raise CallbackError(
                f"could not reach {where}: {type(exc).__name__}"
            ) from exc
        duration_ms = (time.monotonic() - started) * 1000
        log.info(
            "callback %s attempt %d (%s) to %s: HTTP %d in %.0f ms",
            event_id, attempt, callback.protocol, where, status, duration_ms,
        )
        report = DeliveryReport(status, duration_ms, _excerpt(payload))
        _classify(status, retry_after, where)
        if callback.protocol == "xmlrpc":
            parse_response(payload)
        return report


def _classify(status: int, retry_after: float | None, where: str) -> None:
    """Raise for any status that is not a success (see the module docstring)."""
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise CallbackError(f"site {where} answered {status} (a redirect, not followed)")
    if status == 410:
        raise CallbackRefused("site answered 410 Gone: stop")
    if status in (408, 429) or status >= 500:
        raise CallbackError(f"site {where} answered {status}", retry_after=retry_after)
    if 400 <= status < 500:
        raise CallbackRefused(f"site {where} answered {status}: not retrying")
    raise CallbackError(f"site {where} answered unexpected status {status}")
