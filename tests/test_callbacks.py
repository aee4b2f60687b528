"""Calling sites back: signatures, XML-RPC, the destination guard and real HTTP servers."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
import xmlrpc.client
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from backchannel.config import CallbackSettings, Secret
from backchannel.errors import CallbackError, CallbackRefused
from workers.callbacks import (
    CallbackClient,
    GuardedResolver,
    backoff_schedule,
    build_call,
    build_headers,
    check_destination,
    next_delay,
    parse_response,
    parse_retry_after,
    sign,
    verify,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<methodResponse><params><param><value><string>&lol9;</string></value></param></params>
</methodResponse>"""

OK_RESPONSE = xmlrpc.client.dumps((True,), methodresponse=True).encode()


# --------------------------------------------------------------------------- Standard Webhooks


def test_standard_webhooks_test_vector() -> None:
    body = b'{"test": 2432232314}'
    signature = sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": signature,
    }
    verify(SECRET, headers, body, now=1614265330 + 10)


def test_plain_secret_is_used_as_utf8_bytes() -> None:
    a = sign("not-whsec-secret", "id1", 1000, b"{}")
    b = sign("whsec_" + "bm90LXdoc2VjLXNlY3JldA==", "id1", 1000, b"{}")  # same bytes, base64
    assert a == b
    assert a != sign("other", "id1", 1000, b"{}")


def test_verify_rejects_tampering_staleness_and_missing_headers() -> None:
    now = 1_700_000_000
    body = b'{"id":"e1","type":"user.registered","result":{}}'
    headers = build_headers(SECRET, "e1", body, now)
    verify(SECRET, headers, body, now=now)
    # Header names are case-insensitive even in a plain dict.
    verify(SECRET, {k.title(): v for k, v in headers.items()}, body, now=now)

    with pytest.raises(CallbackRefused, match="no matching signature"):
        verify(SECRET, headers, body.replace(b"e1", b"e2"), now=now)
    with pytest.raises(CallbackRefused, match="no matching signature"):
        verify(SECRET, {**headers, "webhook-id": "e2"}, body, now=now)
    with pytest.raises(CallbackRefused, match="no matching signature"):
        verify("whsec_" + "QUFBQQ==", headers, body, now=now)
    with pytest.raises(CallbackRefused, match="timestamp"):
        verify(SECRET, headers, body, now=now + 301)
    with pytest.raises(CallbackRefused, match="timestamp"):
        verify(SECRET, headers, body, now=now - 301)
    with pytest.raises(CallbackRefused, match="not an integer"):
        verify(SECRET, {**headers, "webhook-timestamp": "soon"}, body, now=now)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        partial = {k: v for k, v in headers.items() if k != name}
        with pytest.raises(CallbackRefused, match=f"missing {name}"):
            verify(SECRET, partial, body, now=now)


def test_verify_accepts_any_of_several_signatures() -> None:
    now = 1_700_000_000
    headers = build_headers(SECRET, "e1", b"x", now)
    good = headers["webhook-signature"]
    several = f"v1,Zm9vYmFy v2,whatever {good}"
    verify(SECRET, {**headers, "webhook-signature": several}, b"x", now=now)
    with pytest.raises(CallbackRefused):
        verify(SECRET, {**headers, "webhook-signature": good.replace("v1,", "v2,")}, b"x",
               now=now)


@pytest.mark.security
def test_malformed_whsec_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(CallbackRefused) as info:
        sign("whsec_!!not base64!!", "e1", 1, b"")
    assert "!!not" not in str(info.value)


# --------------------------------------------------------------------------- XML-RPC


def test_build_call_has_no_nil_and_round_trips() -> None:
    result: dict[Any, Any] = {"lat": 34.15, "lon": None, "tags": ["a", None, "b"], "n": 2**40,
              "nested": {"x": None, "ok": True}, 7: "seven"}
    body = build_call("backchannel.result", "e1", "user.registered", result)
    assert b"<nil" not in body
    params, method = xmlrpc.client.loads(body)
    assert method == "backchannel.result"
    assert params == (
        "e1",
        "user.registered",
        {"lat": 34.15, "tags": ["a", "b"], "n": str(2**40), "nested": {"ok": True},
         "7": "seven"},
    )


def test_parse_response_returns_the_value() -> None:
    assert parse_response(OK_RESPONSE) is True
    body = xmlrpc.client.dumps(({"stored": 1},), methodresponse=True).encode()
    assert parse_response(body) == {"stored": 1}


def test_parse_response_fault_is_a_callback_error_with_clipped_text() -> None:
    body = xmlrpc.client.dumps(xmlrpc.client.Fault(42, "x" * 1000)).encode()
    with pytest.raises(CallbackError, match="fault 42") as info:
        parse_response(body)
    assert not isinstance(info.value, CallbackRefused)
    assert len(str(info.value)) < 260


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<methodResponse><params><param><value>&x;</value></param></params></methodResponse>",
        b'<?xml version="1.0"?><!DOCTYPE methodResponse SYSTEM "http://example.com/x.dtd">'
        b"<methodResponse/>",
    ],
    ids=["billion-laughs", "external-entity", "external-dtd"],
)
@pytest.mark.security
def test_parse_response_refuses_dtds_and_entities(body: bytes) -> None:
    with pytest.raises(CallbackError, match="DTD or entities"):
        parse_response(body)


@pytest.mark.parametrize("body", [b"", b"not xml", b"<html><body>hi</body></html>"])
def test_parse_response_rejects_non_xmlrpc(body: bytes) -> None:
    with pytest.raises(CallbackError):
        parse_response(body)


# --------------------------------------------------------------------------- destination guard


async def test_guard_accepts_the_registered_endpoint_on_loopback_when_allowed() -> None:
    url = "http://127.0.0.1:8080/xmlrpc.php"
    await check_destination(url, allowed_url=url, allow_private=True)
    # Normalisation: default port, case of scheme and host.
    await check_destination("HTTPS://93.184.215.14/hook#frag",
                            allowed_url="https://93.184.215.14:443/hook", allow_private=False)


async def test_guard_unresolvable_host_is_retryable_not_refused() -> None:
    url = "https://no-such-host.invalid/hook"
    with pytest.raises(CallbackError, match="cannot resolve") as info:
        await check_destination(url, allowed_url=url, allow_private=False)
    assert not isinstance(info.value, CallbackRefused)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://[::1]:8080/hook",
        "http://[::ffff:127.0.0.1]:8080/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/hook",
        "http://localhost:8080/hook",  # a name that resolves to loopback
    ],
)
@pytest.mark.security
async def test_guard_refuses_non_global_addresses(url: str) -> None:
    with pytest.raises(CallbackRefused, match="not a public address"):
        await check_destination(url, allowed_url=url, allow_private=False)


async def test_guard_accepts_a_public_literal() -> None:
    url = "https://93.184.215.14/hook"
    await check_destination(url, allowed_url=url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/other",
        "http://127.0.0.1:8081/hook",
        "https://127.0.0.1:8080/hook",
        "http://127.0.0.2:8080/hook",
        "http://127.0.0.1:8080/hook?x=1",
        "http://user:pw@127.0.0.1:8080/hook",
    ],
)
@pytest.mark.security
async def test_guard_refuses_anything_but_the_registered_url(url: str) -> None:
    with pytest.raises(CallbackRefused, match="not the site's registered") as info:
        await check_destination(url, allowed_url="http://127.0.0.1:8080/hook",
                                allow_private=True)
    assert "pw" not in str(info.value)


@pytest.mark.security
async def test_guard_refuses_other_schemes() -> None:
    for url in ("ftp://example.com/x", "file:///etc/passwd", "gopher://example.com/"):
        with pytest.raises(CallbackRefused):
            await check_destination(url, allowed_url=url, allow_private=True)


@pytest.mark.security
async def test_guarded_resolver_refuses_private_answers_unless_allowed() -> None:
    resolver = GuardedResolver()
    try:
        with pytest.raises(CallbackRefused, match="not a public address"):
            await resolver.resolve("localhost", 80)
        resolver.allow_private("localhost")
        results = await resolver.resolve("localhost", 80)
        assert results and all(r["host"] in ("127.0.0.1", "::1") for r in results)
    finally:
        await resolver.close()


# --------------------------------------------------------------------------- real servers


@dataclass
class Site:
    """A fake site on loopback: records what it receives, answers with `reply`."""

    url: str
    received: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(reply: Handler, extra: dict[str, Handler] | None = None) -> AsyncIterator[Site]:
    site: Site | None = None

    async def record(request: web.Request) -> web.StreamResponse:
        assert site is not None
        site.bodies.append(await request.read())
        site.received.append(request)
        return await reply(request)

    app = web.Application()
    app.router.add_post("/hook", record)
    for path, handler in (extra or {}).items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    site = Site(url=f"http://127.0.0.1:{port}/hook")
    try:
        yield site
    finally:
        await runner.cleanup()


def webhook(url: str, **kw: object) -> CallbackSettings:
    return CallbackSettings(url=url, protocol="webhook", secret=Secret(SECRET),
                            allow_private=True, **kw)  # type: ignore[arg-type]


def xmlrpc_cb(url: str, **kw: object) -> CallbackSettings:
    return CallbackSettings(url=url, protocol="xmlrpc", method="site.result",
                            allow_private=True, **kw)  # type: ignore[arg-type]


RESULT = {"location": {"lat": 34.15, "lon": -118.36, "name": "Toluca Lake"}, "crm": None}


async def answer(status: int = 200, body: bytes = b"", **headers: str) -> web.Response:
    return web.Response(status=status, body=body, headers=headers)


async def answer_with(status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, headers=headers)


async def test_webhook_delivery_is_signed_and_idempotent_across_attempts() -> None:
    async def ok(request: web.Request) -> web.Response:
        return await answer(204)

    async with serve(ok) as site, CallbackClient() as client:
        for attempt in (1, 2):
            report = await client.deliver(webhook(site.url), event_id="01JF3Q6W7Z",
                                          event_type="user.registered", result=RESULT,
                                          attempt=attempt)
            assert report.status == 204
            assert report.duration_ms > 0
        assert len(site.received) == 2
        for request, body in zip(site.received, site.bodies, strict=True):
            verify(SECRET, request.headers, body)  # the receiving side's check
            assert request.headers["Content-Type"] == "application/json"
            assert request.headers["Idempotency-Key"] == "01JF3Q6W7Z"
            assert request.headers["User-Agent"].startswith("backchannel/")
            assert json.loads(body) == {"id": "01JF3Q6W7Z", "type": "user.registered",
                                        "result": RESULT}
        ids = {r.headers["webhook-id"] for r in site.received}
        assert ids == {"01JF3Q6W7Z"}
        # Tampering on the way is caught by the receiver.
        with pytest.raises(CallbackRefused):
            verify(SECRET, site.received[0].headers, site.bodies[0].replace(b"Toluca", b"Tolu"))


async def test_xmlrpc_delivery_posts_a_method_call() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=OK_RESPONSE, content_type="text/xml")

    async with serve(ok) as site, CallbackClient() as client:
        report = await client.deliver(xmlrpc_cb(site.url), event_id="e1",
                                      event_type="user.registered", result=RESULT, attempt=1)
        assert report.status == 200
        assert "methodResponse" in report.response_excerpt
        request = site.received[0]
        assert request.headers["Content-Type"].startswith("text/xml")
        assert request.headers["Idempotency-Key"] == "e1"
        assert "webhook-signature" not in request.headers
        params, method = xmlrpc.client.loads(site.bodies[0])
        assert method == "site.result"
        assert params == ("e1", "user.registered",
                          {"location": {"lat": 34.15, "lon": -118.36, "name": "Toluca Lake"}})


async def test_xmlrpc_fault_is_a_retryable_callback_error() -> None:
    fault = xmlrpc.client.dumps(xmlrpc.client.Fault(3, "database is locked")).encode()

    async def faulty(request: web.Request) -> web.Response:
        return await answer(200, fault)

    async with serve(faulty) as site, CallbackClient() as client:
        with pytest.raises(CallbackError, match="fault 3: database is locked") as info:
            await client.deliver(xmlrpc_cb(site.url), event_id="e1", event_type="t",
                                 result={}, attempt=1)
        assert not isinstance(info.value, CallbackRefused)


@pytest.mark.security
async def test_billion_laughs_response_is_refused_unexpanded() -> None:
    async def laughs(request: web.Request) -> web.Response:
        return await answer(200, BILLION_LAUGHS)

    async with serve(laughs) as site, CallbackClient() as client:
        with pytest.raises(CallbackError, match="DTD or entities"):
            await client.deliver(xmlrpc_cb(site.url), event_id="e1", event_type="t",
                                 result={}, attempt=1)


@pytest.mark.security
async def test_redirect_is_not_followed() -> None:
    followed = asyncio.Event()

    async def elsewhere(request: web.Request) -> web.Response:
        followed.set()
        return await answer(200, OK_RESPONSE)

    async def redirect(request: web.Request) -> web.Response:
        return await answer(307, Location="/elsewhere")

    async with serve(redirect, {"/elsewhere": elsewhere}) as site, CallbackClient() as client:
        with pytest.raises(CallbackError, match="redirect, not followed") as info:
            await client.deliver(webhook(site.url), event_id="e1", event_type="t",
                                 result={}, attempt=1)
        assert not isinstance(info.value, CallbackRefused)
        assert len(site.received) == 1
        assert not followed.is_set()


async def test_410_gone_means_stop() -> None:
    async def gone(request: web.Request) -> web.Response:
        return await answer(410, b"x" * 200_000)  # a big body does not hide the 410

    async with serve(gone) as site, CallbackClient() as client:
        with pytest.raises(CallbackRefused, match="410 Gone: stop"):
            await client.deliver(webhook(site.url), event_id="e1", event_type="t",
                                 result={}, attempt=1)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_other_4xx_are_permanent(status: int) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return await answer(status)

    async with serve(refuse) as site, CallbackClient() as client:
        with pytest.raises(CallbackRefused, match=str(status)):
            await client.deliver(webhook(site.url), event_id="e1", event_type="t",
                                 result={}, attempt=1)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
async def test_temporary_statuses_are_retryable(status: int) -> None:
    async def busy(request: web.Request) -> web.Response:
        return await answer(status)

    async with serve(busy) as site, CallbackClient() as client:
        with pytest.raises(CallbackError) as info:
            await client.deliver(webhook(site.url), event_id="e1", event_type="t",
                                 result={}, attempt=1)
        assert not isinstance(info.value, CallbackRefused)
        assert info.value.retry_after is None


async def test_503_retry_after_seconds_and_429_http_date() -> None:
    replies = [("503", "Retry-After", "120"),
               ("429", "Retry-After", email.utils.formatdate(time.time() + 90, usegmt=True))]

    async def busy(request: web.Request) -> web.Response:
        status, name, value = replies[len(site.received) - 1]
        return await answer_with(int(status), {name: value})

    async with serve(busy) as site, CallbackClient() as client:
        with pytest.raises(CallbackError) as info:
            await client.deliver(webhook(site.url), event_id="e1", event_type="t",
                                 result={}, attempt=1)
        assert info.value.retry_after == 120
        with pytest.raises(CallbackError) as info:
            await client.deliver(webhook(site.url), event_id="e1", event_type="t",
                                 result={}, attempt=2)
        assert info.value.retry_after is not None and 80 <= info.value.retry_after <= 91


@pytest.mark.security
async def test_oversize_response_is_refused_with_and_without_content_length() -> None:
    async def big(request: web.Request) -> web.Response:
        return await answer(200, OK_RESPONSE + b" " * 5000)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(10):
            await response.write(b" " * 1000)
        await response.write_eof()
        return response

    for handler in (big, chunked):
        async with serve(handler) as site, CallbackClient() as client:
            with pytest.raises(CallbackError, match="response larger than 4096 bytes"):
                await client.deliver(xmlrpc_cb(site.url, max_response_bytes=4096),
                                     event_id="e1", event_type="t", result={}, attempt=1)


async def test_slow_site_times_out() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return await answer(200)

    async with serve(slow) as site, CallbackClient() as client:
        started = time.monotonic()
        with pytest.raises(CallbackError, match=r"did not answer within 0\.3 s") as info:
            await client.deliver(webhook(site.url, timeout=0.3), event_id="e1",
                                 event_type="t", result={}, attempt=1)
        assert time.monotonic() - started < 5
        assert isinstance(info.value.__cause__, TimeoutError)
        release.set()


async def test_connection_refused_is_retryable() -> None:
    async def ok(request: web.Request) -> web.Response:
        return await answer(200)

    async with serve(ok) as site:
        url = site.url  # the port is free again once the server is gone
    async with CallbackClient() as client:
        with pytest.raises(CallbackError, match="could not reach") as info:
            await client.deliver(webhook(url), event_id="e1", event_type="t", result={},
                                 attempt=1)
        assert not isinstance(info.value, CallbackRefused)


@pytest.mark.security
async def test_loopback_is_refused_unless_the_site_allows_private() -> None:
    async def ok(request: web.Request) -> web.Response:
        return await answer(200)

    async with serve(ok) as site, CallbackClient() as client:
        closed = CallbackSettings(url=site.url, protocol="webhook", secret=Secret(SECRET))
        with pytest.raises(CallbackRefused, match="not a public address"):
            await client.deliver(closed, event_id="e1", event_type="t", result={}, attempt=1)
        local = site.url.replace("127.0.0.1", "localhost")
        with pytest.raises(CallbackRefused, match="not a public address"):
            await client.deliver(CallbackSettings(url=local, protocol="webhook",
                                                  secret=Secret(SECRET)),
                                 event_id="e1", event_type="t", result={}, attempt=1)
        assert site.received == []


@pytest.mark.security
async def test_secrets_stay_out_of_errors() -> None:
    async with CallbackClient() as client:
        cb = CallbackSettings(url="http://user:hunter2@10.0.0.1/hook?token=s3cr3t",
                              protocol="webhook", secret=Secret(SECRET))
        with pytest.raises(CallbackRefused) as info:
            await client.deliver(cb, event_id="e1", event_type="t", result={}, attempt=1)
    text = str(info.value)
    assert "hunter2" not in text and "s3cr3t" not in text and SECRET not in text


async def test_client_refuses_use_outside_its_context() -> None:
    client = CallbackClient()
    with pytest.raises(RuntimeError, match="not opened"):
        await client.deliver(webhook("http://127.0.0.1:1/hook"), event_id="e", event_type="t",
                             result={}, attempt=1)
    async with client:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await client.deliver(webhook("http://127.0.0.1:1/hook"), event_id="e", event_type="t",
                             result={}, attempt=1)


# --------------------------------------------------------------------------- backoff


def test_schedule_starts_now_and_grows() -> None:
    delays = [backoff_schedule(n) for n in range(1, 13)]
    assert delays[:7] == [0, 5, 30, 120, 600, 1800, 3600]
    assert delays == sorted(delays)
    assert delays[-1] == delays[-2]  # it levels off
    with pytest.raises(ValueError):
        backoff_schedule(0)


def test_next_delay_jitters_within_20_percent() -> None:
    samples = [next_delay(1) for _ in range(500)]  # after attempt 1: around 5 s
    assert all(4.0 <= s <= 6.0 for s in samples)
    assert max(samples) - min(samples) > 1.0  # it really jitters
    assert 0.04 <= next_delay(1, scale=0.01) <= 0.06


def test_next_delay_honours_a_longer_retry_after() -> None:
    assert next_delay(1, retry_after=100) == 100
    assert 4.0 <= next_delay(1, retry_after=1) <= 6.0  # shorter: the schedule wins
    assert next_delay(1, retry_after=10**9) == 86400  # capped at a day
    assert next_delay(1, retry_after=100, scale=0.01) == pytest.approx(1.0)


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("30") == 30
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = email.utils.formatdate(now + 60, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(60)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0


@pytest.mark.security
async def test_rebinding_is_caught_when_aiohttp_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS answered "public" at check time, then loopback at connect time (rebinding).

    Nothing real on loopback can play a rebinding DNS server, so the first check is
    patched out; the connection-time resolver must still refuse.
    """
    async def ok(request: web.Request) -> web.Response:
        return await answer(200)

    async def looks_public(url: str, *, allowed_url: str, allow_private: bool) -> None:
        return None

    monkeypatch.setattr("workers.callbacks.client.check_destination", looks_public)
    async with serve(ok) as site, CallbackClient() as client:
        url = site.url.replace("127.0.0.1", "localhost")
        cb = CallbackSettings(url=url, protocol="webhook", secret=Secret(SECRET))
        with pytest.raises(CallbackRefused, match="not a public address"):
            await client.deliver(cb, event_id="e1", event_type="t", result={}, attempt=1)
        assert site.received == []
