"""Secrets never appear in logs, replies or error messages (the last rule of the model).

One full pipeline runs as ``backchannel -vv run`` (DEBUG for every component and every
library, slixmpp's stanza trace included) in a subprocess, against the session's real
XMPP server, with a secret in every place the config has one: account passwords, site
HMAC secrets and a bearer token, webhook signing secrets, an outside service's
``Authorization`` header and HMAC secret, a geocoder API key. Traffic goes through every
door, good and bad. Then every text anyone could read is scanned for every secret: the
subprocess log, the XMPP server's log files, this process's DEBUG log, HTTP answers
(problem details included), the bot's replies, dead letters and results on the nodes,
and what the sites were called back with.

The scanner looks for each secret as written, URL-encoded, and inside base64 (that is
how a SASL PLAIN password travels); ``test_scanner_finds_what_it_must`` and the planted
lines at the end of the pipeline test show it would notice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus
from xml.etree import ElementTree as ET

import aiohttp
import pytest

from backchannel import config
from backchannel.config import Secret
from backchannel.localserver import ManagedServer, ServerState
from backchannel.localserver.base import free_port
from backchannel.redact import LIBRARY_LOGGERS, RedactingFilter, redact
from gateway.auth import HEADER_SIGNATURE, HEADER_SITE, signed_headers
from pubsub.client import PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import JSON_NS, make_event, new_id, to_element
from pubsub.nodes import bootstrap
from simulator.chaos import Chaos
from simulator.demosite import DemoSite
from simulator.services import FakeServices
from simulator.stack import SITE_NAME, SITE_SECRET, SITE_SOURCE, WEBHOOK_SECRET, StackOptions
from simulator.stack import stack_toml as base_stack_toml
from tests.bot_harness import Chatter, stranger_account

pytestmark = pytest.mark.security

MIN_NEEDLE = 8  # shorter fragments would match by chance


# ---------------------------------------------------------------------------- the scanner


def _base64_cores(secret: bytes) -> set[str]:
    """What ``secret`` looks like inside any base64 text, whatever bytes come before it.

    base64 works in 3-byte groups: for each of the three alignments, encode the secret
    behind 0-2 filler bytes and keep only the characters that depend on the secret alone.
    """
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode()
        start = (offset * 8 + 5) // 6  # characters touched by the filler
        end = (len(secret) + offset) // 3 * 4  # characters of complete groups only
        core = encoded[start:end]
        if len(core) >= MIN_NEEDLE:
            cores.add(core)
    return cores


def needles(secret: str) -> set[str]:
    """Every form of ``secret`` the scan looks for."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret),
             json.dumps(secret)[1:-1]}
    forms |= _base64_cores(secret.encode())
    if secret.startswith("whsec_"):
        forms.add(secret.removeprefix("whsec_"))
    return {f for f in forms if len(f) >= MIN_NEEDLE}


@dataclass(frozen=True)
class Finding:
    secret: str  # the name of the secret, never its value
    where: str
    context: str  # the line, with the secret masked


class Scanner:
    def __init__(self, named: Mapping[str, str]) -> None:
        short = [n for n, v in named.items() if len(v) < MIN_NEEDLE]
        assert not short, f"secrets too short to scan for reliably: {short}"
        self.named = {name: needles(value) for name, value in named.items()}

    def scan(self, where: str, text: str) -> list[Finding]:
        found = []
        for line in text.splitlines():
            for name, forms in self.named.items():
                hit = next((f for f in forms if f in line), None)
                if hit is not None:
                    found.append(Finding(name, where, line.replace(hit, "<" + name + ">")[:300]))
        return found

    def scan_all(self, texts: Mapping[str, str]) -> list[Finding]:
        return [f for where, text in texts.items() for f in self.scan(where, text)]


def configured_secrets(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, value) of every non-empty Secret in the settings tree."""
    if isinstance(obj, Secret):
        if obj:
            yield path, obj.reveal()
    elif is_dataclass(obj) and not isinstance(obj, type):
        name = getattr(obj, "name", None)
        for f in fields(obj):
            key = f"{path}.{name}" if path.endswith("sites") and isinstance(name, str) else path
            sub = key if f.name == "options" else f"{key}.{f.name}"  # services.<name>.<option>
            yield from configured_secrets(getattr(obj, f.name), sub.lstrip("."))
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from configured_secrets(v, f"{path}.{k}")
    elif isinstance(obj, tuple | list):
        for v in obj:
            yield from configured_secrets(v, path)


def test_scanner_finds_what_it_must() -> None:
    password = "s3cret-Passw0rd"
    scanner = Scanner({"accounts.worker.password": password, "sites.blog.token": "tok_12345678x"})
    plain = base64.b64encode(b"\0worker\0" + password.encode()).decode()
    basic = base64.b64encode(b"worker:" + password.encode()).decode()
    for line in (f"SEND: <auth mechanism='PLAIN'>{plain}</auth>",
                 f"GET /geocode?key={quote_plus(password)}&q=x",
                 f'{{"password": "{password}"}}',
                 f"Authorization: Basic {basic}"):
        found = scanner.scan("log", line)
        assert [f.secret for f in found] == ["accounts.worker.password"], line
        assert password not in found[0].context
    assert [f.secret for f in scanner.scan("reply", "Bearer tok_12345678x")] == ["sites.blog.token"]
    assert scanner.scan("log", "SEND: <auth mechanism='PLAIN'>AHdvcmtlcgBvdGhlcg==</auth>") == []
    assert dict(configured_secrets(config.loads(
        '[accounts.w]\njid = "w@x"\npassword = "pw-12345678"\n'
        '[[sites]]\nname = "s"\nsource = "u:s"\ntoken = "tok-12345678"\n'))) == {
        "accounts.w.password": "pw-12345678", "sites.s.token": "tok-12345678"}


def test_redacting_filter_masks_sasl_and_remembered_secrets() -> None:
    """The product side: what a library logs is masked before any handler sees it."""
    key = "api-key/with+odd chars"
    Secret(key)  # every Secret registers itself
    record = logging.LogRecord("geopy", logging.DEBUG, __file__, 1, "GET %s", (
        f"http://x/geocode?key={quote_plus(key)}&raw={key}",), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "GET http://x/geocode?key=********&raw=********"
    sasl = ('SEND: <response xmlns="urn:ietf:params:xml:ns:xmpp-sasl">Yz1iaXdzLHI9</response>'
            '<auth mechanism="PLAIN" xmlns="urn:ietf:params:xml:ns:xmpp-sasl">AHgAeQ==</auth>')
    assert redact(sasl) == ('SEND: <response xmlns="urn:ietf:params:xml:ns:xmpp-sasl">********'
                            '</response><auth mechanism="PLAIN" '
                            'xmlns="urn:ietf:params:xml:ns:xmpp-sasl">********</auth>')
    try:
        raise ValueError(f"refused {key}")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    RedactingFilter().filter(failed)
    assert key not in (failed.exc_text or "") and "refused ********" in (failed.exc_text or "")
    # the library loggers carry the filter whatever the logging setup
    for name in LIBRARY_LOGGERS:
        assert any(isinstance(f, RedactingFilter) for f in logging.getLogger(name).filters)


# ---------------------------------------------------------------------------- the pipeline

BLOG = "blog"
BLOG_SOURCE = "https://blog.example.com"


def whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass
class World:
    settings: config.Settings
    env: dict[str, str]
    config_file: Path
    log_file: Path
    gateway: str


def write_config(state: ServerState, var: Path, services: FakeServices, shop: DemoSite,
                 blog: DemoSite, crm_token: str) -> World:
    """The stack's config, plus a second site (webhook) and secrets from the environment."""
    port = free_port()
    text = base_stack_toml(state, StackOptions(
        var_dir=str(var), services_url=services.url, site_url=shop.url,
        callback_protocol="xmlrpc", node_prefix=f"seclog{int(time.time() * 1000) % 10**8}",
        gateway_port=port, geocoder="offline", max_attempts=2))
    # A geocoder whose API key travels in the URL (geopy logs request URLs at DEBUG). The
    # fake services do not speak OpenCage, so every lookup fails: error paths get logged.
    host = services.url.removeprefix("http://")
    text = text.replace('[services.geocode]\nprovider = "offline"',
                        f'[services.geocode]\nprovider = "opencage"\ndomain = "{host}"\n'
                        'scheme = "http"', 1)
    assert 'provider = "opencage"' in text
    text += (f'\n[[sites]]\nname = "{BLOG}"\nsource = "{BLOG_SOURCE}"\n'
             f'[sites.callback]\nurl = "{blog.webhook_url}"\nprotocol = "webhook"\n'
             "allow_private = true\ntimeout = 5.0\n")
    env = {  # secrets kept out of the file, as the config docs recommend
        "BACKCHANNEL_SITES_BLOG_SECRET": "blog-hmac-" + secrets.token_urlsafe(12),
        "BACKCHANNEL_SITES_BLOG_TOKEN": "blog-token-" + secrets.token_urlsafe(12),
        "BACKCHANNEL_SITES_BLOG_CALLBACK_SECRET": blog.secret or "",
        "BACKCHANNEL_SERVICES_CRM_AUTH_HEADER": f"Bearer {crm_token}",
        "BACKCHANNEL_SERVICES_CRM_SECRET": "crm-hmac-" + secrets.token_urlsafe(12),
        "BACKCHANNEL_SERVICES_MAILING_LIST_AUTH_HEADER": f"Bearer {crm_token}",
        "BACKCHANNEL_SERVICES_GEOCODE_API_KEY": "geo-key-" + secrets.token_urlsafe(12),
    }
    config_file = var / "backchannel.toml"
    config_file.write_text(text)
    settings = config.load(config_file, env=env)
    return World(settings, env, config_file, var / "run.log", f"http://127.0.0.1:{port}")


async def wait_ready(url: str, proc: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_file.read_text()[-3000:]
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise AssertionError("backchannel run never became ready:\n" + log_file.read_text()[-3000:])


async def post(session: aiohttp.ClientSession, url: str, body: bytes,
               headers: Mapping[str, str]) -> tuple[int, str]:
    async with session.post(f"{url}/v1/events", data=body,
                            headers={"Content-Type": "application/json", **headers}) as r:
        return r.status, await r.text()


def registration(source: str, n: int) -> dict[str, Any]:
    return {"specversion": "1.0", "id": new_id(), "source": source, "type": "user.registered",
            "data": {"user_id": f"u{n}", "name": f"User {n}", "email": f"u{n}@example.com",
                     "address": "Lyon, France"}}


async def http_traffic(w: World, replies: dict[str, str]) -> list[str]:
    """Good and refused requests through the gateway; returns the accepted event ids."""
    shop_secret = w.settings.site_by_name(SITE_NAME)
    blog = w.settings.site_by_name(BLOG)
    assert shop_secret is not None and blog is not None
    ids: list[str] = []
    async with aiohttp.ClientSession() as session:
        for n in range(3):
            doc = registration(SITE_SOURCE, n)
            body = json.dumps(doc).encode()
            status, text = await post(session, w.gateway, body,
                                      signed_headers(SITE_NAME, SITE_SECRET, body))
            assert status == 202, text
            ids.append(doc["id"])
        for n in range(3, 5):
            doc = registration(BLOG_SOURCE, n)
            status, text = await post(session, w.gateway, json.dumps(doc).encode(),
                                      {"Authorization": f"Bearer {blog.token.reveal()}"})
            assert status == 202, text
            ids.append(doc["id"])
        body = json.dumps(registration(SITE_SOURCE, 99)).encode()
        good = signed_headers(SITE_NAME, SITE_SECRET, body)
        refusals = {
            "bad-signature": {**good, HEADER_SIGNATURE: "v1=" + "0" * 64},
            "stale": signed_headers(SITE_NAME, SITE_SECRET, body, time.time() - 3600),
            "wrong-site-secret": signed_headers(BLOG, SITE_SECRET, body),
            "unknown-site": {**good, HEADER_SITE: "nosuchsite"},
            "bad-token": {"Authorization": f"Bearer {blog.token.reveal()}x"},
            "token-for-other-site": {"Authorization": f"Bearer {blog.token.reveal()}",
                                     HEADER_SITE: SITE_NAME},
            "source-mismatch": signed_headers(
                BLOG, blog.secret.reveal(), body),  # the blog posting as the shop
            "malformed": signed_headers(SITE_NAME, SITE_SECRET, b"{not json"),
        }
        for name, headers in refusals.items():
            payload = b"{not json" if name == "malformed" else body
            status, text = await post(session, w.gateway, payload, headers)
            assert 400 <= status < 500, (name, status, text)
            replies[f"http {name}"] = text
        async with session.get(f"{w.gateway}/v1/events/{ids[0]}",
                               headers=signed_headers(SITE_NAME, SITE_SECRET, b"")) as r:
            replies["http event status"] = await r.text()
        for path in ("/v1/status", "/metrics", "/healthz"):
            async with session.get(f"{w.gateway}{path}") as r:
                replies[f"http {path}"] = await r.text()
    return ids


async def xmpp_traffic(w: World) -> list[str]:
    site = XmppConnection(w.settings.xmpp, w.settings.account("site"), resource="seclog")
    await site.start()
    try:
        ps = PubSub(site, w.settings.xmpp.pubsub_service)
        ids = []
        for n in range(10, 12):
            event = make_event("user.registered", SITE_SOURCE, registration(SITE_SOURCE, n)["data"])
            await ps.publish(w.settings.nodes.events, event.id, to_element(event))
            ids.append(event.id)
        bad = ET.Element(f"{{{JSON_NS}}}json")
        bad.text = '{"specversion": "1.0", "broken'
        await ps.publish(w.settings.nodes.events, "seclog-bad-item", bad)
        return ids
    finally:
        await site.close()


BOT_LINES = ["help", "whoami", "status", "version", "stats 1h", "events --last 5",
             "deadletters list", "feeds", "geocode Lyon, France", "pause crm", "resume crm",
             "frobnicate", "show 01NOSUCHEVENT0000000000000", "deadletters retry all"]


async def bot_traffic(w: World, state: ServerState, managed: ManagedServer, event_id: str,
                      replies: dict[str, str]) -> None:
    bot_jid = w.settings.account("bot").bare
    conns = []
    try:
        for account in (w.settings.account("operator"), w.settings.account("stranger")):
            conn = XmppConnection(w.settings.xmpp, account, resource="seclog")
            await conn.start()
            conns.append(conn)
        op, stranger = (Chatter(c, bot_jid) for c in conns)
        for line in [*BOT_LINES, f"show {event_id}", "deadletters show 1"]:
            replies[f"bot to operator: {line}"] = await op.ask(line, timeout=20)
        question = replies["bot to operator: deadletters retry all"]
        token = question.rsplit("confirm ", 1)[-1].split("`")[0]
        replies["bot confirm"] = await op.ask(f"confirm {token}", timeout=20)
        for line in ("status", "deadletters list", "whoami", "help"):
            replies[f"bot to stranger: {line}"] = await stranger.ask(line, timeout=20)
    finally:
        for conn in conns:
            await conn.close()


async def node_texts(w: World) -> dict[str, str]:
    admin = XmppConnection(w.settings.xmpp, w.settings.account("admin"), resource="seclog")
    await admin.start()
    try:
        ps = PubSub(admin, w.settings.xmpp.pubsub_service)
        out = {}
        for node in (w.settings.nodes.deadletters, w.settings.nodes.results,
                     w.settings.nodes.feed("activity")):
            items = await ps.items(node, max_items=200)
            out[f"node {node}"] = "\n".join(
                ET.tostring(i.payload, encoding="unicode") for i in items if i.payload is not None)
        return out
    finally:
        await admin.close()


def server_logs(managed: ManagedServer) -> dict[str, str]:
    files = {managed.log_file, *managed.dir.rglob("*.log")}
    return {f"server log {p.name}": p.read_text(errors="replace") for p in files if p.is_file()}


@pytest.mark.integration
async def test_no_secret_in_any_log_reply_or_error(
        server_state: ServerState, managed: ManagedServer, bootstrapped: Any,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    stranger_account(managed, server_state)  # an account with a password the config lists
    state = managed.load_state()
    assert state is not None and "stranger" in state.accounts
    crm_token = "crm-token-" + secrets.token_urlsafe(12)
    services = FakeServices(crm_token=crm_token, lists_token=crm_token, seed=3,
                            chaos={"crm": Chaos(error_rate=0.3)})
    shop = DemoSite(secret=WEBHOOK_SECRET, seed=3)
    blog = DemoSite(secret=whsec(), seed=4)
    blog.control.set(Chaos(error_rate=0.3))  # some callbacks retried
    replies: dict[str, str] = {}
    async with services, shop, blog:
        w = write_config(state, tmp_path, services, shop, blog, crm_token)
        named = dict(configured_secrets(w.settings))
        named["services.crm.token"] = crm_token
        assert {"accounts.worker.password", "accounts.stranger.password", "sites.shop.secret",
                "sites.blog.token", "sites.blog.callback.secret", "services.geocode.api_key",
                "services.crm.auth_header", "services.crm.secret"} <= set(named), sorted(named)
        scanner = Scanner(named)
        async with XmppConnection(w.settings.xmpp, w.settings.account("admin"),
                                  resource="seclog-boot") as admin:
            reports = await bootstrap(PubSub(admin, w.settings.xmpp.pubsub_service), w.settings)
        assert all(r.action != "failed" for r in reports), [r.lines() for r in reports]
        started = time.monotonic()
        with open(w.log_file, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "backchannel.cli", "-vv", "run", "-c", str(w.config_file)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **w.env},
                cwd=tmp_path)
        try:
            await wait_ready(w.gateway, proc, w.log_file)
            print(f"backchannel run ready in {time.monotonic() - started:.1f} s")
            ids = await http_traffic(w, replies)
            ids += await xmpp_traffic(w)
            # every event gets a callback, geocoded or not: 5 to the shop, 2 to the blog
            await shop.wait_for(5, timeout=60)
            await blog.wait_for(2, timeout=60)
            await bot_traffic(w, state, managed, ids[0], replies)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        replies.update(await node_texts(w))
        replies["callbacks at shop"] = json.dumps(shop.applied)
        replies["callbacks at blog"] = json.dumps(blog.applied)

    run_log = w.log_file.read_text(errors="replace")
    # The log really is DEBUG from every component and library, so a leak would be in it.
    for expected in ("DEBUG", "SEND: ", "geopy", "gateway", "workers.", "command 'status' by",
                     "callback", "opencage"):
        assert expected in run_log, expected
    assert blog.applied and shop.applied
    # The lines that used to carry secrets are still logged, masked (backchannel.redact).
    assert 'mechanism="PLAIN">********</auth>' in run_log
    assert "/geocode/v1/json?key=********&" in run_log
    texts = {"backchannel run log": run_log, **server_logs(managed),
             "test process log": caplog.text, **replies}
    findings = scanner.scan_all(texts)
    assert not findings, "\n".join(f"{f.secret} in {f.where}: {f.context}" for f in findings)

    # The scan would have noticed: plant a password as SASL PLAIN sends it, an API key as
    # geopy's URL log carries it, and a token in a reply; each is found where it was put.
    worker_pw = w.settings.account("worker").password.reveal()
    blob = base64.b64encode(b"\0worker\0" + worker_pw.encode()).decode()
    api_key = named["services.geocode.api_key"]
    planted = dict(texts)
    planted["backchannel run log"] += (
        f"\nDEBUG slixmpp: SEND: <auth mechanism='PLAIN'>{blob}</auth>"
        f"\nDEBUG geopy: OpenCage.geocode: http://x/geocode/v1/json?key={quote_plus(api_key)}")
    planted["bot to operator: status"] += " " + named["sites.blog.token"]
    assert sorted((f.secret, f.where) for f in scanner.scan_all(planted)) == [
        ("accounts.worker.password", "backchannel run log"),
        ("services.geocode.api_key", "backchannel run log"),
        ("sites.blog.token", "bot to operator: status"),
    ]
