"""Fuzzing what sites answer to callbacks (workers.callbacks): XML-RPC and webhook responses.

Two targets:

- ``xmlrpc``: :func:`~workers.callbacks.parse_response` on any bytes (hypothesis): real
  responses and faults of any value, the same cut short or spliced, other encodings, and
  entity payloads (billion laughs of any depth and width, external entities and DTDs,
  parameter entities). Property: a value or a :class:`~backchannel.errors.CallbackError`
  with a short message that leaks nothing; a DTD or an entity is refused, never expanded.
- ``webhook``: :meth:`~workers.callbacks.CallbackClient.deliver`, over both protocols, to a
  raw TCP "site" on loopback that answers whatever the seeded generator says: any status,
  Retry-After values and dates, Content-Length too short or too long, broken chunks, gzip
  bombs, huge and non-UTF-8 bodies, redirects to metadata addresses. Property: a
  :class:`~workers.callbacks.DeliveryReport` for a 2xx (and an XML-RPC answer that is not
  a fault), else a CallbackError (or CallbackRefused) with a short, clean message. (A
  "1xx" with a body stalls the exchange until the site's timeout, 5 s here: aiohttp waits
  for the final answer while the site waits for it to read; that is what the timeout is
  for.) Plus
  :func:`~workers.callbacks.verify` (the receiving half) on any headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import random
import time
import xmlrpc.client
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel.config import CallbackSettings, Secret
from backchannel.errors import CallbackError, CallbackRefused
from tests.fuzz_support import MAX_MESSAGE, FuzzRun, fuzz_run, leaks
from workers.callbacks import (
    CallbackClient,
    DeliveryReport,
    build_headers,
    next_delay,
    parse_response,
    parse_retry_after,
    sign,
    verify,
)

pytestmark = pytest.mark.fuzz

SEED = 20261206
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DTD_REFUSED = "response contains a DTD or entities"

# ------------------------------------------------------------------------------ XML-RPC

xml_char = st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"],
                         exclude_characters="\ufffe\uffff")
xml_text = st.text(xml_char, max_size=30) | st.builds(
    lambda s, n: s * n, st.text(xml_char, min_size=1, max_size=3), st.sampled_from([100, 2000]))
rpc_scalars = (st.booleans() | st.integers(-(2**31), 2**31 - 1) | xml_text
               | st.floats(allow_nan=False) | st.binary(max_size=20).map(xmlrpc.client.Binary)
               | st.datetimes(min_value=dt.datetime(1, 1, 1)))
rpc_values = st.recursive(
    rpc_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(xml_text, inner, max_size=3),
    max_leaves=10,
)


def response(value: Any) -> bytes:
    return xmlrpc.client.dumps((value,), methodresponse=True).encode("utf-8")


faults = st.builds(
    lambda code, text: xmlrpc.client.dumps(xmlrpc.client.Fault(code, text)).encode("utf-8"),
    st.integers(-(2**31), 2**31 - 1) | xml_text, xml_text)
# A fault whose code or text is not what the spec says (any value, any struct).
odd_faults = st.builds(
    lambda value: (b"<?xml version='1.0'?><methodResponse><fault>"
                   + response(value).split(b"<param>")[1].split(b"</param>")[0]
                   + b"</fault></methodResponse>"),
    rpc_values)


@st.composite
def entity_payloads(draw: st.DrawFn) -> bytes:
    """Billion laughs of any shape, external entities, external and internal DTDs."""
    kind = draw(st.integers(0, 5))
    name = draw(st.from_regex(r"[a-z]{1,6}", fullmatch=True))
    body = f"<methodResponse><params><param><value><string>&{name};</string></value>" \
           "</param></params></methodResponse>"
    if kind == 0:
        depth, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        lines = [f'<!ENTITY {name}0 "{draw(st.text("lo ", min_size=1, max_size=5))}">']
        for level in range(1, depth + 1):
            lines.append(f'<!ENTITY {name}{level} "' + f"&{name}{level - 1};" * width + '">')
        lines.append(f'<!ENTITY {name} "&{name}{depth};">')
        dtd = "<!DOCTYPE r [\n" + "\n".join(lines) + "\n]>"
    elif kind == 1:
        target = draw(st.sampled_from(["file:///etc/passwd", "http://169.254.169.254/latest",
                                       "http://127.0.0.1:1/x", "expect://id", "/dev/random"]))
        dtd = f'<!DOCTYPE r [<!ENTITY {name} SYSTEM "{target}">]>'
    elif kind == 2:
        dtd = f'<!DOCTYPE r PUBLIC "-//x//y" "http://example.com/{name}.dtd">'
    elif kind == 3:
        dtd = f'<!DOCTYPE r [<!ENTITY % {name} SYSTEM "http://example.com/p.dtd"> %{name};]>'
    elif kind == 4:
        dtd = "<!DOCTYPE methodResponse []>"
        body = body.replace(f"&{name};", "ok")
    else:
        dtd = f'<!DOCTYPE r [<!ENTITY {name} "plain">]>'
    declaration = draw(st.sampled_from(["", '<?xml version="1.0"?>',
                                        '<?xml version="1.0" encoding="utf-8"?>\n']))
    return (declaration + dtd + body).encode("utf-8")


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    """A valid response or fault, cut, with bytes inserted, or re-declared."""
    raw = draw(st.one_of(rpc_values.map(response), faults))
    roll = draw(st.integers(0, 4))
    if roll == 0:
        return raw[: draw(st.integers(0, len(raw)))]
    if roll == 1:
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(min_size=1, max_size=10)) + raw[at:]
    if roll == 2:
        encoding = draw(st.sampled_from(["utf-16", "latin-1", "x-unknown", "ascii", "",
                                         "utf-8\x00", "UTF-32"]))
        return raw.replace(b"version='1.0'?>", f"version='1.0' encoding='{encoding}'?>"
                           .encode("utf-8", "replace"), 1)
    if roll == 3:  # swap a type tag for another (or nonsense)
        tags = [b"int", b"i4", b"i8", b"string", b"double", b"boolean", b"base64",
                b"dateTime.iso8601", b"struct", b"array", b"nil", b"name", b"value", b"member"]
        old, new = draw(st.sampled_from(tags)), draw(st.sampled_from([*tags, b"x", b"bogus"]))
        return raw.replace(b"<" + old + b">", b"<" + new + b">").replace(
            b"</" + old + b">", b"</" + new + b">")
    huge = draw(st.sampled_from([b"9" * 4400, b"1e999", b"-", b"0x10", b"\xd9\xa3", b"",
                                 b"2026-13-45T99:99:99", b"!!!"]))
    tag = draw(st.sampled_from([b"int", b"double", b"i8", b"boolean", b"dateTime.iso8601",
                                b"base64"]))
    return (b"<?xml version='1.0'?><methodResponse><params><param><value><" + tag + b">"
            + huge + b"</" + tag + b"></value></param></params></methodResponse>")


rpc_bodies = (rpc_values.map(response) | faults | odd_faults | entity_payloads() | spliced()
              | st.binary(max_size=200))


def judge_rpc(run: FuzzRun, body: bytes) -> None:
    with run.case(body):
        try:
            parse_response(body)
        except CallbackError as exc:
            message = str(exc)
            assert message and len(message) <= MAX_MESSAGE, f"{len(message)}: {message[:200]}"
            assert leaks(message) is None, message
            return
        # A value: so there was no DTD and no entity declaration in it.
        assert b"<!DOCTYPE" not in body and b"<!ENTITY" not in body, "a DTD was accepted"


def test_fuzz_xmlrpc_responses(long_mode: bool, server_kind: str) -> None:
    with fuzz_run("xmlrpc", long_mode=long_mode, server_kind=server_kind,
                  ci_cases=1000) as run:

        @run.hypothesis()
        @given(body=rpc_bodies)
        def parsing(body: bytes) -> None:
            judge_rpc(run, body)

        @run.hypothesis(0.01)
        @given(body=entity_payloads())
        def entities_are_refused(body: bytes) -> None:
            with run.case(body):
                with pytest.raises(CallbackError) as info:
                    parse_response(body)
                # well-formed up to the DTD: refused for what it is, not as broken XML
                assert str(info.value) == DTD_REFUSED, str(info.value)

        parsing()
        entities_are_refused()


# ------------------------------------------------------------------------------ webhook


@dataclass
class Reply:
    data: bytes
    complete: bool  # a well-framed HTTP answer


RETRY_AFTER = ["0", "5", "120", "-5", "1e3", "", " 7 ", "9" * 30, "²", "³", "٣", "½",
               "Fri, 31 Dec 9999 23:59:59 -1200", "Mon, 01 Jan 0001 00:00:00 +0100",
               "Wed, 21 Oct 2015 07:28:00 GMT", "Mon, 01 Jan 10000 00:00:00 GMT",
               "Thu, 01 Jan 1970 00:00:00 +9999", "tomorrow", "Sun, 06 Nov 1994 08:49:37",
               "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "\u00e9"]


GZIP_BOMB = gzip.compress(b"\0" * 5_000_000)  # 5 MB of zeros in about 5 KB


def site_reply(rng: random.Random) -> Reply:
    status = rng.choice([200] * 8 + [201, 202, 204, 299, 301, 302, 307, 308, 400, 401, 404,
                                     408, 409, 410, 418, 429, 500, 502, 503, 599, 100, 101,
                                     199, 600, 999])
    reason = rng.choice(["OK", "", "Whatever", "\u00e9t\u00e9", "x" * 500])
    body: bytes
    roll = rng.random()
    if roll < 0.3:
        value: Any = rng.choice([True, 1, "stored", {"ok": True}, [1, 2], ""])
        body = response(value)
    elif roll < 0.4:
        body = xmlrpc.client.dumps(xmlrpc.client.Fault(
            rng.choice([1, -1, 2**31 - 1, "x" * rng.choice([1, 5000])]),
            "f" * rng.choice([0, 10, 5000]))).encode()
    elif roll < 0.5:
        depth = rng.randint(2, 10)
        lines = ['<!ENTITY a0 "lol">'] + [
            f'<!ENTITY a{i} "' + f"&a{i - 1};" * 10 + '">' for i in range(1, depth)]
        body = (f"<?xml version='1.0'?><!DOCTYPE r [{''.join(lines)}]><methodResponse>"
                f"<params><param><value><string>&a{depth - 1};</string></value></param>"
                "</params></methodResponse>").encode()
    elif roll < 0.6:
        body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))
    elif roll < 0.65:
        body = b"x" * rng.choice([65536, 65537, 200_000, 1_000_000])
    elif roll < 0.7:
        body = GZIP_BOMB
    elif roll < 0.8:
        body = b'{"ok": true}'
    else:
        body = b""
    headers = [("Connection", "close")]
    if rng.random() < 0.3:
        headers.append(("Retry-After", rng.choice(RETRY_AFTER)))
    if rng.random() < 0.2:
        headers.append(("Location", rng.choice(["http://169.254.169.254/", "/elsewhere",
                                                "file:///etc/passwd", ""])))
    if body.startswith(b"\x1f\x8b") or rng.random() < 0.05:
        headers.append(("Content-Encoding", rng.choice(["gzip", "deflate", "br", "x"])))
    if rng.random() < 0.3:
        headers.append(("Content-Type", rng.choice(["text/xml", "application/json",
                                                    "text/html; charset=utf-16", ";"])))
    complete = True
    roll = rng.random()
    payload = body
    if roll < 0.7:
        headers.append(("Content-Length", str(len(body))))
    elif roll < 0.75:
        headers.append(("Content-Length", str(len(body) + rng.randint(1, 100))))
        complete = False
    elif roll < 0.8:
        headers.append(("Content-Length", rng.choice(["-1", "abc", "9" * 25, "1, 2"])))
        complete = False
    elif roll < 0.9:
        headers.append(("Transfer-Encoding", "chunked"))
        if rng.random() < 0.8:
            payload = (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n") if body \
                else b"0\r\n\r\n"
        else:
            payload = b"zz\r\n" + body
            complete = False
    # else: no length, the body runs to the end of the connection
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    if rng.random() < 0.03:
        head = rng.choice(["HTTP/1.1 200\r\n\r\n", "HTTP/9 200 OK\r\n\r\n", "garbage\r\n\r\n",
                           "", "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n"])
        complete = False
    return Reply(head.encode("utf-8") + payload, complete)


class FakeSite:
    """A TCP server that reads each request and answers with ``self.reply``, then closes."""

    def __init__(self) -> None:
        self.reply = Reply(b"", False)
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(self.reply.data)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def fake_site() -> AsyncIterator[FakeSite]:
    site = FakeSite()
    site.server = await asyncio.start_server(site.handle, "127.0.0.1", 0)
    site.port = site.server.sockets[0].getsockname()[1]
    try:
        yield site
    finally:
        site.server.close()
        await site.server.wait_closed()


def outcome(exc: CallbackError) -> str:
    text = str(exc)
    for kind in ("fault", "DTD", "larger than", "redirect", "could not reach", "not well-formed",
                 "not an XML-RPC", "410 Gone"):
        if kind in text:
            return kind
    if " answered 4" in text:
        return "answered 4xx"
    if " answered 5" in text or "answered 9" in text or "answered 6" in text:
        return "answered 5xx"
    return text[:60]


def judge_callback_error(exc: CallbackError) -> None:
    message = str(exc)
    assert message and len(message) <= MAX_MESSAGE, f"{len(message)}: {message[:200]}"
    assert leaks(message) is None, message
    assert "whsec_" not in message and SECRET[6:] not in message, "the secret in an error"


async def one_delivery(run: FuzzRun, n: int, client: CallbackClient, site: FakeSite,
                       seen: Counter[str]) -> None:
    rng = random.Random(f"{SEED}-{n}")
    site.reply = site_reply(rng)
    protocol = rng.choice(["webhook", "xmlrpc"])
    limit = rng.choice([65536, 65536, 100, 1, 1_000_000])
    callback = CallbackSettings(
        url=f"http://127.0.0.1:{site.port}/hook", protocol=protocol,  # type: ignore[arg-type]
        method="site.result", secret=Secret(SECRET), allow_private=True, timeout=5.0,
        max_response_bytes=limit)
    with run.case(f"case {n} (seed {SEED}) {protocol}: {site.reply.data[:200]!r}"):
        try:
            report = await client.deliver(callback, event_id=f"ev{n}",
                                          event_type="user.registered",
                                          result={"n": n}, attempt=rng.randint(1, 12))
        except CallbackError as exc:
            judge_callback_error(exc)
            seen[outcome(exc)] += 1
            if exc.retry_after is not None:  # what the responder does with it
                assert next_delay(1, retry_after=exc.retry_after) >= 0
            return
        seen["delivered"] += 1
        assert isinstance(report, DeliveryReport)
        assert 200 <= report.status < 300, report
        assert len(report.response_excerpt) <= 200
        assert b"<!DOCTYPE" not in site.reply.data or protocol == "webhook", \
            "an XML-RPC answer with a DTD was accepted"


def header(headers: dict[str, str], name: str) -> str:
    """As verify reads a plain dict: the exact name first, then any spelling of it."""
    if name in headers:
        return headers[name]
    return next(v for k, v in headers.items() if k.lower() == name)


def fuzzed_headers(rng: random.Random, good: dict[str, str]) -> dict[str, str]:
    headers = dict(good)
    for _ in range(rng.randint(0, 3)):
        name = rng.choice(["webhook-id", "webhook-timestamp", "webhook-signature",
                           "Webhook-Signature", "x"])
        value = rng.choice(["", " ", "\ud800", "\u00e9", "9" * 5000, "²", "-1", "v1,",
                            "v1,!!!", "v1," + "A" * 44, "v2,x v1,y", good.get(name, "x") * 2,
                            str(int(time.time())), "\x00"])
        if rng.random() < 0.3:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


async def test_fuzz_webhook_responses(long_mode: bool, server_kind: str,
                                      fake_site: FakeSite) -> None:
    with fuzz_run("webhook", long_mode=long_mode, server_kind=server_kind,
                  ci_cases=600) as run:
        seen: Counter[str] = Counter()
        async with CallbackClient() as client:
            for n in range(int(run.budget * 0.7)):
                await one_delivery(run, n, client, fake_site, seen)
        run.notes["outcomes"] = dict(seen.most_common())
        # The mix reached every way an answer can go (not only "could not reach").
        for kind in ("delivered", "fault", "DTD", "larger than", "redirect", "answered 4xx",
                     "answered 5xx", "could not reach"):
            assert seen[kind] >= 1, (kind, seen)
        rng = random.Random(SEED)
        for n in range(run.budget - int(run.budget * 0.7)):
            body = rng.randbytes(rng.randint(0, 50))
            good = build_headers(SECRET, f"ev{n}", body)
            headers = fuzzed_headers(rng, good)
            with run.case(f"verify case {n} (seed {SEED}): {headers!r}"[:300]):
                try:
                    verify(SECRET, headers, body)
                except CallbackRefused as exc:
                    judge_callback_error(exc)
                    continue
                # Accepted: so it really carries the signature of that id, time and body.
                msg_id, stamp = header(headers, "webhook-id"), header(headers, "webhook-timestamp")
                assert sign(SECRET, msg_id, int(stamp), body) in \
                    header(headers, "webhook-signature").split(), headers
        for value in RETRY_AFTER:
            with run.case(f"Retry-After {value!r}"):
                seconds = parse_retry_after(value)
                assert seconds is None or seconds >= 0


def test_what_fuzzing_found() -> None:
    # str.isdigit() says yes to "²": float("²") raised ValueError out of deliver().
    assert parse_retry_after("²") is None and parse_retry_after("٣") is None
    assert parse_retry_after(" 7 ") == 7.0
    # A fault code is whatever the site sent: it was echoed whole (5,000 characters).
    body = xmlrpc.client.dumps(xmlrpc.client.Fault("c" * 5000, "why")).encode()
    with pytest.raises(CallbackError) as info:
        parse_response(body)
    assert str(info.value) == f"site answered XML-RPC fault {'c' * 39}…: why"
    # An unknown encoding made expat raise LookupError out of parse_response.
    with pytest.raises(CallbackError, match="declares an encoding that does not exist"):
        parse_response(b"<?xml version='1.0' encoding='x-unknown'?><methodResponse/>")
    # A non-UTF-8 byte in a received webhook-id (a lone surrogate) raised UnicodeEncodeError.
    headers = build_headers(SECRET, "e1", b"{}") | {"webhook-id": "e\udce91"}
    with pytest.raises(CallbackRefused, match="webhook-id is not UTF-8 text"):
        verify(SECRET, headers, b"{}")
