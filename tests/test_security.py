"""The design's security model, rule by rule (docs/security.md maps each rule to its tests).

Rules already guarded elsewhere carry the ``security`` marker where they are; this file
holds what was missing: TLS and certificates as the connection layer really negotiates
them, node access on the real server, the bot's refusals over a real chat, and callbacks
that never go where an event asks. Secrets in logs: ``test_security_logs.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import aiohttp
import pytest
from aiohttp import web

from backchannel import config
from backchannel.config import Account, Secret, XmppSettings
from backchannel.errors import ConfigError, XmppError, XmppRefused, XmppTimeout
from backchannel.localserver import ManagedServer, ServerState
from backchannel.metrics import Metrics
from bot.chat import ANONYMOUS_REFUSAL
from commands.dispatch import DENIED
from gateway.app import Gateway
from gateway.auth import Authenticator
from gateway.problems import Problem
from pubsub.client import PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import make_event, to_element
from pubsub.nodes import bootstrap
from simulator.chaos import Chaos
from simulator.stack import SITE_SOURCE
from tests.bot_harness import (
    bot_world,
    open_room_hiding_real_jids,
    room_name,
    stranger_account,
)
from tests.gateway_support import SHOP, encode, event_doc, post_events, signed, with_sites
from tests.pipeline_harness import Pipeline, wait_until
from tests.xmpp_listener import Listener, make_certificate
from workers.worker import Worker

pytestmark = pytest.mark.security

PASSWORD = "tls-test-password-7Qx"  # what must never reach a fake server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("certs")
    return {name: make_certificate(folder, name) for name in ("localhost", "other.example")}


def tls_settings(port: int, *, direct: bool = False, ca_file: Path | None = None
                 ) -> XmppSettings:
    """What a component gets from a config that names a TLS server on loopback."""
    text = f'[xmpp]\nhost = "127.0.0.1"\nport = {port}\ndomain = "localhost"\n'
    if direct:
        text += "direct_tls = true\n"
    if ca_file is not None:
        text += f'ca_file = "{ca_file}"\n'
    settings = config.loads(text).xmpp
    assert not settings.loopback_plaintext  # TLS is the default even on loopback
    return replace(settings, reconnect_max_delay=0.5)


async def attempt(settings: XmppSettings, until: asyncio.Event, timeout: float = 10.0
                  ) -> BaseException | None:
    """Start a connection as worker@localhost; stop at ``until`` (or when start ends).

    Returns what ``start`` raised (None if it connected, which no test here expects).
    """
    conn = XmppConnection(settings, Account("worker@localhost", Secret(PASSWORD)))
    start = asyncio.create_task(conn.start(timeout=timeout))
    waiter = asyncio.create_task(until.wait())
    try:
        await asyncio.wait({start, waiter}, timeout=timeout + 2,
                           return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            return None if until.is_set() else AssertionError("neither start nor the event")
        return start.exception()
    finally:
        waiter.cancel()
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)
        await conn.close()


def client_verify_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the client said when it refused a certificate (slixmpp logs it at DEBUG)."""
    out = []
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]}"
        if "certificate verify failed" in text.lower():
            out.append(text)
    return out


def assert_no_credentials(listener: Listener) -> None:
    seen = bytes(listener.received)
    assert b"<auth" not in seen, seen[-300:]
    assert PASSWORD.encode() not in seen


# ---------------------------------------------------------------------------- TLS


async def test_no_tls_offered_means_no_credentials_sent() -> None:
    """A server (or a man in the middle) that offers no TLS gets no login attempt."""
    async with Listener("none") as listener:
        error = await attempt(tls_settings(listener.port), listener.auth_seen)
    assert isinstance(error, XmppError), error
    assert "TLS" in str(error), error
    assert_no_credentials(listener)


@pytest.mark.integration
async def test_real_plaintext_server_is_refused_unless_marked_loopback_dev(
        settings: config.Settings) -> None:
    """The managed server offers no TLS: marked loopback-dev it works, unmarked it is refused."""
    assert settings.xmpp.loopback_plaintext
    unmarked = replace(settings.xmpp, loopback_plaintext=False, reconnect_max_delay=0.5)
    conn = XmppConnection(unmarked, settings.account("worker"), resource="sec-tls")
    try:
        with pytest.raises(XmppError, match="TLS"):
            await conn.start(timeout=15)
        assert conn.sessions == 0
    finally:
        await conn.close()


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
async def test_self_signed_certificate_is_refused_without_ca_file(
        certs: dict[str, tuple[Path, Path]], direct: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    mode = "direct" if direct else "starttls"
    with caplog.at_level(logging.DEBUG, logger="slixmpp"):
        async with Listener(mode, certs["localhost"]) as listener:
            await attempt(tls_settings(listener.port, direct=direct), listener.tls_failed)
    assert listener.tls_failed.is_set() and not listener.tls_up.is_set()
    assert any("self-signed" in f for f in client_verify_failures(caplog)), caplog.text[-2000:]
    assert_no_credentials(listener)


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
async def test_refused_certificate_is_named_in_the_start_error(
        certs: dict[str, tuple[Path, Path]], direct: bool) -> None:
    """An operator sees why: the verification failure, not only "no session in time"."""
    mode = "direct" if direct else "starttls"
    async with Listener(mode, certs["localhost"]) as listener:
        settings = tls_settings(listener.port, direct=direct)
        conn = XmppConnection(settings, Account("worker@localhost", Secret(PASSWORD)))
        try:
            with pytest.raises(XmppTimeout, match="certificate verify failed"):
                await conn.start(timeout=3)
        finally:
            await conn.close()
    assert_no_credentials(listener)


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
async def test_trusted_certificate_for_another_name_is_refused(
        certs: dict[str, tuple[Path, Path]], direct: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    cert = certs["other.example"]
    mode = "direct" if direct else "starttls"
    with caplog.at_level(logging.DEBUG, logger="slixmpp"):
        async with Listener(mode, cert) as listener:
            await attempt(tls_settings(listener.port, direct=direct, ca_file=cert[0]),
                          listener.tls_failed)
    assert listener.tls_failed.is_set() and not listener.tls_up.is_set()
    assert any("localhost" in f for f in client_verify_failures(caplog)), caplog.text[-2000:]
    assert_no_credentials(listener)


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
async def test_ca_file_makes_the_same_certificate_trusted(
        certs: dict[str, tuple[Path, Path]], direct: bool) -> None:
    """The control: with ``ca_file`` the handshake that was refused above goes through."""
    cert = certs["localhost"]
    mode = "direct" if direct else "starttls"
    async with Listener(mode, cert) as listener:
        await attempt(tls_settings(listener.port, direct=direct, ca_file=cert[0]),
                      listener.auth_seen)
    assert listener.tls_up.is_set(), listener.tls_error
    assert listener.auth_seen.is_set()  # credentials go only inside the verified TLS


async def test_unreadable_ca_file_is_a_config_error_before_any_connection(
        tmp_path: Path) -> None:
    """Not a timeout after failed handshakes: the key and the reason, and no connection."""
    async with Listener("none") as listener:
        settings = tls_settings(listener.port, ca_file=tmp_path / "missing.pem")
        conn = XmppConnection(settings, Account(jid="worker@localhost",
                                                password=Secret(PASSWORD)), resource="ca")
        try:
            with pytest.raises(ConfigError, match=r"xmpp\.ca_file: cannot read the CA file"):
                await conn.start(timeout=5)
        finally:
            await conn.close()
    assert not listener.received, "the client talked to the server despite the bad ca_file"


# ---------------------------------------------------------------------------- node access

REFUSALS = ("forbidden", "not-authorized", "not-allowed", "item-not-found")


def probe_event(tag: str) -> ET.Element:
    return to_element(make_event("user.registered", SITE_SOURCE, {"probe": tag}))


@pytest.mark.integration
async def test_only_publishers_may_publish_to_events(
        bootstrapped: config.Settings, managed: ManagedServer, server_state: ServerState,
        connect: Any) -> None:
    """On the real server: members who may read, and strangers, cannot publish or take over."""
    events = bootstrapped.nodes.events
    service = bootstrapped.xmpp.pubsub_service
    admin = PubSub(await connect("admin", "sec-admin"), service)
    stranger_acct = stranger_account(managed, server_state)
    stranger_conn = XmppConnection(bootstrapped.xmpp, stranger_acct, resource="sec")
    await stranger_conn.start()
    try:
        writers = {"stranger": PubSub(stranger_conn, service)}
        for name in ("worker", "bot", "operator"):  # members of the whitelist: readers only
            writers[name] = PubSub(await connect(name, "sec-pub"), service)
        for name, ps in writers.items():
            item_id = f"sec-{name}-{server_state.kind}"
            with pytest.raises(XmppRefused) as refused:
                await ps.publish(events, item_id, probe_event(name))
            assert refused.value.condition in REFUSALS, (name, refused.value)
            assert await admin.item(events, item_id) is None, name
        stranger = writers["stranger"]
        with pytest.raises(XmppRefused):  # no way around it: no self-service affiliation ...
            await stranger.set_affiliations(events, {stranger_acct.bare: "publisher"})
        with pytest.raises(XmppRefused):  # ... and no reconfiguring the node open
            await stranger.configure(events, {"pubsub#publish_model": "open"})
        with pytest.raises(XmppRefused):
            await stranger.purge(events)
        affiliations = await admin.affiliations(events)
        assert stranger_acct.bare not in affiliations
        assert (await admin.node_config(events))["pubsub#publish_model"] == ["publishers"]
        # the control: a registered publisher does get through
        site = PubSub(await connect("site", "sec-site"), service)
        await site.publish(events, f"sec-site-{server_state.kind}", probe_event("site"))
    finally:
        await stranger_conn.close()


@pytest.mark.integration
async def test_feeds_are_open_or_whitelisted_and_events_never_open(
        bootstrapped: config.Settings, managed: ManagedServer, server_state: ServerState,
        connect: Any) -> None:
    service = bootstrapped.xmpp.pubsub_service
    prefix = f"sec{int(time.time() * 1000) % 10**8}"
    closed = replace(bootstrapped, nodes=replace(
        bootstrapped.nodes, events=f"{prefix}.events", results=f"{prefix}.results",
        deadletters=f"{prefix}.deadletters", feed_prefix=f"{prefix}.feeds.",
        feed_access="whitelist"))
    admin = PubSub(await connect("admin", "sec-admin"), service)
    reports = await bootstrap(admin, closed)
    assert all(r.action != "failed" for r in reports), [r.lines() for r in reports]
    stranger_conn = XmppConnection(bootstrapped.xmpp, stranger_account(managed, server_state),
                                   resource="sec-read")
    await stranger_conn.start()
    try:
        stranger = PubSub(stranger_conn, service)
        member = PubSub(await connect("operator", "sec-read"), service)
        open_feed = bootstrapped.nodes.feed("signups")
        assert isinstance(await stranger.items(open_feed, max_items=1), list)  # open: anyone
        for node in (bootstrapped.nodes.events, closed.nodes.events, closed.nodes.feed("signups"),
                     closed.nodes.deadletters):
            with pytest.raises(XmppRefused) as refused:
                await stranger.items(node, max_items=1)
            assert refused.value.condition in REFUSALS, (node, refused.value)
            assert isinstance(await member.items(node, max_items=1), list), node
        with pytest.raises(XmppRefused):  # open to read is not open to write
            await stranger.publish(open_feed, "sec-feed", probe_event("feed"))
    finally:
        await stranger_conn.close()
        for node in closed.nodes.all():
            with contextlib.suppress(XmppRefused):
                await admin.delete(node)


# ---------------------------------------------------------------------------- bot access

VIEWER = "worker@localhost"  # the worker account doubles as a viewer
ABOVE_VIEWER = ["pause geocode", "resume geocode", "deadletters retry 1",
                "deadletters retry all", "replay --since 1h", "subscribe signups",
                "unsubscribe signups", "deadletters purge"]


@pytest.mark.integration
async def test_viewer_is_refused_operator_and_admin_commands_and_every_line_is_audited(
        server_state: ServerState, bootstrapped: Any, tmp_path: Path) -> None:
    async with bot_world(server_state, tmp_path, roles={VIEWER: "viewer"}) as w:
        viewer = await w.client("worker", "sec-viewer")
        op = await w.client("operator", "sec-op")
        before = len(w.bot.state.audit(1000))
        for line in ABOVE_VIEWER:
            assert await viewer.ask(line) == DENIED, line
        assert ": connected" in await viewer.ask("status")  # what a viewer may do, works
        # a confirmation belongs to whoever was asked: the viewer cannot use the admin's
        question = await op.ask("deadletters purge")
        token = question.rsplit("confirm ", 1)[-1].split("`")[0]
        assert "nothing waiting" in await viewer.ask(f"confirm {token}")
        assert not any(lane.paused for lane in w.runtime.worker.lanes.values())
        assert w.bot.relays.subscriptions(VIEWER) == []

        sent = len(ABOVE_VIEWER) + 1 + 1  # the viewer's lines, and the admin's question
        sent += 1  # the viewer's confirm
        await wait_until(lambda: len(w.bot.state.audit(1000)) - before >= sent, 5,
                         "audit rows")
        rows = w.bot.state.audit(1000)[: len(w.bot.state.audit(1000)) - before]
        assert len(rows) == sent, rows
        mine = [r for r in rows if r["who"] == VIEWER]
        assert len(mine) == sent - 1
        assert sorted(r["command"] for r in mine if r["outcome"] == "denied") == sorted(
            ["pause", "resume", "deadletters retry", "deadletters retry all", "replay",
             "subscribe", "unsubscribe", "deadletters purge"])
        assert {r["outcome"] for r in mine} == {"denied", "ok", "error"}
        assert [r["outcome"] for r in rows if r["who"] == "operator@localhost"] == ["pending"]


@pytest.mark.integration
async def test_private_message_through_a_room_that_hides_jids_is_refused(
        server_state: ServerState, bootstrapped: Any, connect: Any, tmp_path: Path) -> None:
    """A room occupant JID (room@muc/nick) carries no role, in the room or in private."""
    room = room_name("semipm", server_state)
    owner: XmppConnection = await connect("operator", "owner")
    await open_room_hiding_real_jids(owner, room)
    async with bot_world(server_state, tmp_path, rooms=(room,)) as w:
        await wait_until(lambda: w.bot.rooms.rooms[room].joined, 10, "bot in the room")
        nick = w.settings.bot.nick
        op = await w.client("operator", "sec-pm")  # an admin, but the bot cannot know
        op.join(room, "op")
        await wait_until(lambda: "op" in w.bot.rooms.rooms[room].occupants, 10, "op joined")
        before = len(w.bot.state.audit(100))
        reply = await op.ask("status", to=f"{room}/{nick}", kind="chat")
        assert reply == ANONYMOUS_REFUSAL
        assert len(w.bot.state.audit(100)) == before  # refused before any command ran


# ---------------------------------------------------------------------------- callbacks


@pytest.mark.integration
async def test_callbacks_go_to_the_registered_endpoint_only(
        server_state: ServerState, bootstrapped: Any, tmp_path: Path) -> None:
    """Events cannot steer a callback: not by naming a URL, not from an unregistered
    source, not by a redirect from the site; only the registration's endpoint is called."""
    trap_hits: list[str] = []

    async def trap(request: web.Request) -> web.Response:
        trap_hits.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", trap)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    trap_url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        async with Pipeline(server_state, tmp_path, protocol="webhook") as p:
            # the site answers with a redirect to the trap until told otherwise
            p.site.control.set(Chaos(error_rate=1.0, error_status=307, location=trap_url))
            conn = XmppConnection(p.settings.xmpp, p.settings.account("worker"),
                                  resource="sec-worker")
            worker = Worker(p.settings, conn, store_path=str(p.var / "worker.sqlite"))
            await worker.start()
            await conn.start()
            steering = {"callback": trap_url, "callback_url": trap_url, "url": trap_url,
                        "webhook": trap_url, "name": "Amy", "address": "Paris, France"}
            good = make_event("user.registered", SITE_SOURCE, steering)
            stranger = make_event("user.registered", "https://evil.example.net", steering)
            await p.publisher.publish(p.settings.nodes.events, stranger)
            await p.publisher.publish(p.settings.nodes.events, good)
            await wait_until(lambda: p.site.stats.failures >= 2, 20, "redirects answered")
            p.site.control.set(Chaos())
            await p.site.wait_for(1, timeout=20)
            await wait_until(lambda: bool(worker.store.deadletters()), 10, "a dead letter")
            assert list(p.site.applied) == [good.id]
            reasons = {d.event_id: d.reason for d in worker.store.deadletters()}
            assert "not a registered site" in reasons[stranger.id]
            await worker.close()
            await conn.close()
        assert trap_hits == []
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------- gateway


@pytest.fixture
async def whitelisted_gateway(bootstrapped: config.Settings, connect: Any
                              ) -> AsyncIterator[Gateway]:
    """A live gateway over nodes of its own whose feeds are whitelisted."""
    prefix = f"secgw{int(time.time() * 1000) % 10**8}"
    settings = with_sites(replace(bootstrapped, nodes=replace(
        bootstrapped.nodes, events=f"{prefix}.events", results=f"{prefix}.results",
        deadletters=f"{prefix}.deadletters", feed_prefix=f"{prefix}.feeds.",
        feed_access="whitelist")))
    admin = PubSub(await connect("admin", "sec-gw-admin"), settings.xmpp.pubsub_service)
    reports = await bootstrap(admin, settings)
    assert all(r.action != "failed" for r in reports), [r.lines() for r in reports]
    try:
        async with Gateway(settings, await connect("gateway", "sec-gw"), metrics=Metrics(),
                           heartbeat=0.2) as gateway:
            await asyncio.wait_for(gateway.hub.subscribed.wait(), 10)
            yield gateway
    finally:
        for node in settings.nodes.all():
            with contextlib.suppress(XmppRefused):
                await admin.delete(node)


@pytest.mark.integration
async def test_whitelisted_feeds_are_not_served_to_anyone_over_http(
        whitelisted_gateway: Gateway) -> None:
    """The gateway may read a whitelisted feed; it must not hand it to every browser."""
    url = f"{whitelisted_gateway.url}/v1/feeds/signups"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as r:
            assert r.status == 401, r.headers  # (a stream's body never ends: not read)
            problem = await r.json(content_type=None)
            assert problem["type"].endswith("missing-credentials")
        async with session.get(url, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        async with session.get(url, headers=signed(b"", SHOP)) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        async with session.get(url, headers={"Authorization": "Bearer shop-token"}) as r:
            assert r.status == 200
            assert (await asyncio.wait_for(r.content.readline(), 5)).startswith(b"retry:")


@pytest.mark.integration
async def test_a_replayed_signed_request_stores_the_event_once(
        whitelisted_gateway: Gateway) -> None:
    """Inside the timestamp tolerance a captured request can be sent again; the event id
    makes that harmless (one item on the node). Outside it, it is refused."""
    doc = event_doc()
    body = encode(doc)
    headers = signed(body, SHOP)
    node = whitelisted_gateway.settings.nodes.events
    async with aiohttp.ClientSession() as session:
        first = await post_events(session, whitelisted_gateway.url, body, headers=headers)
        again = await post_events(session, whitelisted_gateway.url, body, headers=headers)
    assert first[0] == 202 and again[0] in (200, 202), (first, again)
    items = await whitelisted_gateway.pubsub.items(node, max_items=100)
    assert [i.id for i in items].count(doc["id"]) == 1
    stale = Authenticator((SHOP,), tolerance=300, clock=lambda: time.time() + 301)
    with pytest.raises(Problem) as refused:
        stale.authenticate(headers, body)
    assert refused.value.kind == "stale-timestamp"
