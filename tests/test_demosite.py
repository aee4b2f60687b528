"""The demo site: callbacks in (XML-RPC and signed webhooks), each event applied once."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import xmlrpc.client
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from simulator.chaos import Chaos
from simulator.demosite import DemoSite, extract_user, webhook_problem, webhook_signature

SECRET = "whsec_" + base64.b64encode(b"demo-site-secret-for-tests-only!").decode()

RESULT = {
    "data": {"user_id": "42", "name": "Amy <Ångström>", "email": "amy@example.com",
             "address": "Lyon, France"},
    "tasks": {"geocode": {"status": "ok", "result": {
        "latitude": 45.749, "longitude": 4.848, "display_name": "Lyon, France"}}},
}


@pytest_asyncio.fixture
async def site() -> AsyncIterator[DemoSite]:
    async with DemoSite(secret=SECRET, seed=1) as demo:
        yield demo


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def signed(body: bytes, msg_id: str, secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if ts is None else ts
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
            "webhook-signature": webhook_signature(secret, msg_id, stamp, body),
            "Content-Type": "application/json"}


async def send_webhook(http: aiohttp.ClientSession, site: DemoSite, msg_id: str,
                       payload: Any, **kw: Any) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    headers = kw.pop("headers", None) or signed(body, msg_id, **kw)
    async with http.post(site.webhook_url, data=body, headers=headers,
                         allow_redirects=False) as resp:
        return resp.status, await resp.json()


async def send_xmlrpc(http: aiohttp.ClientSession, site: DemoSite, *params: Any,
                      method: str = "backchannel.result") -> Any:
    body = xmlrpc.client.dumps(params, methodname=method, encoding="utf-8").encode()
    async with http.post(site.xmlrpc_url, data=body,
                         headers={"Content-Type": "text/xml"}) as resp:
        assert resp.status == 200
        return xmlrpc.client.loads(await resp.read())[0][0]


# -- Standard Webhooks verification -----------------------------------------------------

def test_signature_matches_the_published_test_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    sig = webhook_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
               "webhook-signature": f"v1,bm9wZQ== {sig}"}
    assert webhook_problem(secret, headers, body, now=1614265330 + 10) is None


def test_verification_rejects_tampering_staleness_and_gaps() -> None:
    body = b'{"type": "x"}'
    now = 1_700_000_000
    good = signed(body, "evt-1", ts=now)
    assert webhook_problem(SECRET, good, body, now=now) is None
    assert webhook_problem(SECRET, good, body + b" ", now=now) == "no matching v1 signature"
    other = "whsec_" + base64.b64encode(b"another secret").decode()
    assert webhook_problem(other, good, body, now=now) == "no matching v1 signature"
    assert "tolerance" in (webhook_problem(SECRET, good, body, now=now + 301) or "")
    assert "missing" in (webhook_problem(SECRET, {}, body, now=now) or "")
    v2 = {**good, "webhook-signature": good["webhook-signature"].replace("v1,", "v2,")}
    assert webhook_problem(SECRET, v2, body, now=now) == "no matching v1 signature"
    assert "integer" in (webhook_problem(SECRET, {**good, "webhook-timestamp": "soon"}, body,
                                         now=now) or "")


# -- applying callbacks -----------------------------------------------------------------

async def test_webhook_applies_once_and_counts_duplicates(
    site: DemoSite, http: aiohttp.ClientSession
) -> None:
    assert await send_webhook(http, site, "evt-1", RESULT) == (
        200, {"event_id": "evt-1", "status": "applied"})
    assert await send_webhook(http, site, "evt-1", RESULT) == (
        200, {"event_id": "evt-1", "status": "duplicate"})
    assert (site.received, len(site.applied), site.duplicates, site.rejected) == (2, 1, 1, 0)
    user = site.users["42"]
    assert user["name"] == "Amy <Ångström>" and user["via"] == "webhook"
    assert user["location"] == {"latitude": 45.749, "longitude": 4.848,
                                "display_name": "Lyon, France"}


async def test_forged_or_stale_webhooks_are_rejected(
    site: DemoSite, http: aiohttp.ClientSession
) -> None:
    wrong = "whsec_" + base64.b64encode(b"not the site's secret").decode()
    assert (await send_webhook(http, site, "evt-2", RESULT, secret=wrong))[0] == 401
    assert (await send_webhook(http, site, "evt-2", RESULT, ts=int(time.time()) - 3600))[0] == 401
    assert (await send_webhook(http, site, "evt-2", RESULT, headers={"x": "y"}))[0] == 401
    assert site.rejected == 3 and site.applied == {} and site.received == 0
    assert site.stats.failures == 3


async def test_xmlrpc_callbacks_share_the_idempotency_keys(
    site: DemoSite, http: aiohttp.ClientSession
) -> None:
    answer = await send_xmlrpc(http, site, "evt-3", "user.registered", RESULT)
    assert answer == {"event_id": "evt-3", "status": "applied"}
    assert site.applied["evt-3"]["event_type"] == "user.registered"
    assert (await send_webhook(http, site, "evt-3", RESULT))[1]["status"] == "duplicate"
    with pytest.raises(xmlrpc.client.Fault) as fault:
        await send_xmlrpc(http, site, "evt-4", "user.registered", RESULT, method="other.method")
    assert fault.value.faultCode == -32601
    with pytest.raises(xmlrpc.client.Fault) as fault:
        await send_xmlrpc(http, site, "evt-4")
    assert fault.value.faultCode == -32602
    entity = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
              b"<methodCall><methodName>backchannel.result</methodName></methodCall>")
    async with http.post(site.xmlrpc_url, data=entity) as resp:
        with pytest.raises(xmlrpc.client.Fault):
            xmlrpc.client.loads(await resp.read())
    assert (site.received, site.duplicates, site.rejected) == (2, 1, 3)


async def test_wait_for_wakes_when_events_arrive(
    site: DemoSite, http: aiohttp.ClientSession
) -> None:
    waiter = asyncio.create_task(site.wait_for(3, timeout=5))
    for i in range(3):
        await send_webhook(http, site, f"evt-w{i}", {"data": {"user_id": str(i)}})
    await waiter
    assert len(site.users) == 3
    with pytest.raises(TimeoutError):
        await site.wait_for(4, timeout=0.05)


async def test_unsigned_site_accepts_plain_webhooks(http: aiohttp.ClientSession) -> None:
    async with DemoSite() as plain:
        status, _ = await send_webhook(http, plain, "evt-p", RESULT,
                                       headers={"webhook-id": "evt-p"})
        assert status == 200 and "evt-p" in plain.applied


# -- misbehaving on purpose -------------------------------------------------------------

async def test_site_chaos_gone_redirect_and_down(
    site: DemoSite, http: aiohttp.ClientSession
) -> None:
    site.control.set(Chaos(error_rate=1.0, error_status=410))
    assert (await send_webhook(http, site, "evt-c", RESULT))[0] == 410
    site.control.set(Chaos(error_rate=1.0, error_status=307, location="http://elsewhere.example/"))
    body = json.dumps(RESULT).encode()
    async with http.post(site.webhook_url, data=body, headers=signed(body, "evt-c"),
                         allow_redirects=False) as resp:
        assert resp.status == 307 and resp.headers["Location"] == "http://elsewhere.example/"
    site.control.set(Chaos(down=True, retry_after=2))
    async with http.post(site.xmlrpc_url, data=b"<methodCall/>") as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "2"
    assert site.applied == {} and site.received == 0 and site.stats.failures == 3
    site.control.set(Chaos())
    assert (await send_webhook(http, site, "evt-c", RESULT))[1]["status"] == "applied"


# -- showing users ----------------------------------------------------------------------

async def test_page_and_users_json_show_users(site: DemoSite, http: aiohttp.ClientSession) -> None:
    await send_webhook(http, site, "evt-5", RESULT)
    await send_xmlrpc(http, site, "evt-6", "user.registered", {"data": {"user_id": "7"}})
    async with http.get(site.url + "/") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
    assert "Amy &lt;Ångström&gt;" in page and "<Ångström>" not in page
    assert 'http-equiv="refresh"' in page and "<svg" in page and "<circle" in page
    assert "http://" not in page and "https://" not in page  # no external assets
    async with http.get(site.url + "/users.json") as resp:
        users = await resp.json()
    assert [u["user_id"] for u in users] == ["7", "42"]
    assert users[0]["location"] is None


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (RESULT, ("42", "Amy <Ångström>", 45.749)),
        ({"specversion": "1.0", "type": "backchannel.result", "data": RESULT},
         ("42", "Amy <Ångström>", 45.749)),
        ({"user_id": 9, "tasks": [{"name": "geocode", "result": {"lat": "1.5", "lon": "2"}}]},
         ("9", None, 1.5)),
        ({"event": {"data": {"user_id": "3", "name": "Bo"}}, "geocode": {"lat": 5, "lng": 6}},
         ("3", "Bo", 5.0)),
        ({"tasks": {"geocode": {"status": "failed", "error": "timeout"}}}, (None, None, None)),
        ("not a struct", (None, None, None)),
    ],
)
def test_extract_user_is_tolerant(result: Any, expected: tuple[Any, ...]) -> None:
    user = extract_user(result)
    lat = user["location"]["latitude"] if user["location"] else None
    assert (user["user_id"], user["name"], lat) == expected
