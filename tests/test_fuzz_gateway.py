"""Fuzzing HTTP ingest: generated bodies *and* headers against the real gateway app.

The gateway is the real :class:`~gateway.app.Gateway` on a loopback port, with its XMPP
session never started (so valid events get a 503 "xmpp-unavailable"; the XMPP-up path is
``test_gateway_fuzz.py``). A seeded generator (case ``n`` uses ``Random(f"{SEED}-{n}")``,
so the failure message's case number reproduces it) mixes:

- bodies from the existing body generator (valid events, broken attributes, hostile JSON,
  random bytes, batches), sent with aiohttp's client;
- hand-written requests on a raw socket, where the client library would not let us be
  wrong: signature, timestamp, site and Authorization variants, content types with odd
  parameters, Content-Length too short, too long, negative, non-numeric, duplicated or
  next to chunked Transfer-Encoding, broken chunks, bodies cut short by a half-close,
  non-ASCII header bytes, other methods and paths.

Property: every answer is a 4xx (or the offline 503) with a specific problem, or, for
requests that break HTTP framing itself, aiohttp's own plain-text 400; never a 5xx of
ours, never a traceback, exception name or secret in the answer, and nothing logged as an
unhandled error. The gateway still answers normally afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp
import pytest

from gateway.app import Gateway
from gateway.auth import HEADER_SIGNATURE, HEADER_SITE, HEADER_TIMESTAMP, signature
from gateway.problems import CONTENT_TYPE, TYPE_PREFIX
from tests.fuzz_support import FuzzRun, fuzz_run, leaks
from tests.gateway_support import BLOG, NO_SECRET, SHOP, event_doc, signed
from tests.test_gateway_fuzz import body_and_headers, rand_string

pytestmark = pytest.mark.fuzz

SEED = 20261205
ANSWER_WITHIN = 60.0  # a hang guard, not a speed requirement
ALLOWED = {400, 401, 403, 404, 405, 413, 415, 422, 503}
SECRETS = ("shop-secret", "shop-token", "blog-secret")




# ------------------------------------------------------------------------------ generation


def sign_headers(rng: random.Random, body: bytes) -> list[tuple[str, str]]:
    """Authentication headers: right, wrong, missing, odd; as (name, value) pairs."""
    now = int(time.time())
    site = rng.choice([SHOP] * 6 + [BLOG] * 3 + [NO_SECRET])  # BLOG: source mismatch
    timestamp: str = str(now)
    roll = rng.random()
    if roll < 0.08:
        timestamp = rng.choice(["", " ", "-5", "1e9", "12.5", "9" * 20, "0x10", "١٢٣",
                                f" {now} ", f"+{now}", str(now - 10_000), str(now + 10_000),
                                f"{now}\t", "٣" * 10])
    secret = site.secret.reveal() or "guess"
    good = signature(secret, timestamp.strip(), body)
    roll = rng.random()
    if roll < 0.55:
        sig = good
    elif roll < 0.6:
        sig = good.upper()
    elif roll < 0.65:
        sig = f"v1=00, {good}" if rng.random() < 0.5 else f"v1=zz {good} v2=x"
    elif roll < 0.7:
        sig = "v1=" + "0" * rng.choice([0, 1, 63, 64, 65, 8000])
    elif roll < 0.75:
        sig = good.replace("v1=", rng.choice(["v2=", "", "v1:", "V1=", "v1=="]))
    elif roll < 0.8:
        sig = signature(secret, timestamp, body + b" ")
    else:
        sig = rng.choice(["", " ", ",", "v1=", rand_string(rng)])
    headers = [(HEADER_SITE, rng.choice([site.name] * 8 + ["", "SHOP", "nosuch", "x" * 300,
                                                           "shop ", "shop,blog"])),
               (HEADER_TIMESTAMP, timestamp), (HEADER_SIGNATURE, sig)]
    roll = rng.random()
    if roll < 0.1:
        headers.pop(rng.randrange(len(headers)))
    elif roll < 0.2:
        token = rng.choice(["shop-token", "shop-token ", "", "x" * 5000, "blog-secret",
                            "shop-token\u00e9"])
        scheme = rng.choice(["Bearer", "bearer", "Basic", "Bearer  ", ""])
        headers = [("Authorization", f"{scheme} {token}")]
        if rng.random() < 0.3:
            headers.append((HEADER_SITE, rng.choice(["shop", "blog", "nosuch"])))
    elif roll < 0.25:
        headers.append(("Authorization", rng.choice(["Bearer shop-token", "Bearer nope"])))
    return headers


CONTENT_TYPES = [
    "application/json", "application/json", "application/json", "application/json",
    "application/json; charset=utf-8", "application/json; charset=UTF8",
    "application/json;charset=\"utf-8\"", "application/cloudevents+json",
    "application/cloudevents-batch+json", "application/json; charset=latin-1",
    "application/json; charset=utf-16", "application/json; charset", "application/json;;;",
    "application/json; charset=utf-8; charset=latin-1", "APPLICATION/JSON", "text/plain",
    "", "multipart/form-data; boundary=", "application/x-www-form-urlencoded", ";",
    "application/json; q=\"unterminated", "*/*", "application/problem+json",
]


def content_type_headers(rng: random.Random) -> list[tuple[str, str]]:
    roll = rng.random()
    if roll < 0.05:
        return []
    if roll < 0.08:
        return [("Content-Type", rng.choice(CONTENT_TYPES)),
                ("Content-Type", rng.choice(CONTENT_TYPES))]
    return [("Content-Type", rng.choice(CONTENT_TYPES))]


@dataclass
class RawRequest:
    data: bytes
    truncated: bool  # the client stops sending before the declared body is complete
    framing: bool  # the request breaks HTTP framing: aiohttp may answer it itself
    ingest: bool  # a POST to /v1/events (anything else may get any answer below 500)


def chunked(rng: random.Random, body: bytes) -> tuple[bytes, bool, bool]:
    """A chunked body: right, or with a broken size, extension or end."""
    parts, i = [], 0
    while i < len(body):
        n = rng.randint(1, 4096)
        parts.append(f"{n if i + n <= len(body) else len(body) - i:x}".encode() + b"\r\n"
                     + body[i:i + n] + b"\r\n")
        i += n
    roll = rng.random()
    if roll < 0.6:
        return b"".join(parts) + b"0\r\n\r\n", False, False
    if roll < 0.7:
        return b"".join(parts), True, False  # never ends
    if roll < 0.8:
        return b"zz\r\n" + body + b"\r\n0\r\n\r\n", False, True
    if roll < 0.9:
        return b"".join(parts) + b"0;ext=1\r\nTrailer: x\r\n\r\n", False, False
    return b"fffffffffffffffffff\r\n" + body, False, True


def raw_request(rng: random.Random) -> RawRequest:
    body, _ = body_and_headers(rng)
    method = rng.choice(["POST"] * 30 + ["PUT", "GET", "DELETE", "PATCH", "post", "P\u00d6ST",
                                         "CONNECT"])
    path = rng.choice(["/v1/events"] * 30 + ["/v1/events/", "//v1/events", "/v1/%65vents",
                                            "/v1/events?x=1", "/v1/events#f", "*", "/",
                                            "/v1/events/../events", "/" + "a" * 9000])
    version = rng.choice(["HTTP/1.1"] * 30 + ["HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", ""])
    headers = [("Host", "127.0.0.1"), ("Connection", "close"), *content_type_headers(rng),
               *sign_headers(rng, body)]
    truncated = False
    framing = method not in ("POST", "PUT", "GET", "DELETE", "PATCH") or \
        version not in ("HTTP/1.1", "HTTP/1.0")
    payload = body
    roll = rng.random()
    if roll < 0.55:
        headers.append(("Content-Length", str(len(body))))
    elif roll < 0.6:
        headers.append(("Content-Length", str(max(0, len(body) - rng.randint(1, 50)))))
        framing = True  # the rest of the body is read as a next request
    elif roll < 0.65:
        headers.append(("Content-Length", str(len(body) + rng.randint(1, 1000))))
        truncated = True
    elif roll < 0.75:
        headers.append(("Content-Length", rng.choice(["-1", "abc", "+5", " 5", "0x10", "",
                                                      "9" * 25, "5, 5", "1e3", "\u0665"])))
        framing = True
    elif roll < 0.8:
        headers += [("Content-Length", str(len(body))),
                    ("Content-Length", rng.choice([str(len(body)), str(len(body) + 1)]))]
        framing = True
    elif roll < 0.92:
        payload, cut, bad = chunked(rng, body)
        headers.append(("Transfer-Encoding", rng.choice(["chunked"] * 6 + ["Chunked",
                                                                           "gzip, chunked"])))
        if rng.random() < 0.2:
            headers.append(("Content-Length", str(len(body))))
            bad = True
        truncated, framing = truncated or cut, framing or bad
    elif roll < 0.96:
        headers.append(("Transfer-Encoding", rng.choice(["gzip", "identity", "chunked, gzip",
                                                         "x"])))
        headers.append(("Content-Length", str(len(body))))
        framing = True
    else:  # no length at all: the body bytes are read as a next request
        framing = True
    if rng.random() < 0.05:
        headers.append(("X-Fold", "a\r\n folded"))
        framing = True
    if rng.random() < 0.05:
        headers.append((rng.choice(["X-Bad Name", "X-\u00e9", ":", "", "X-Nul"]),
                        rng.choice(["v", "\x00", "\u00e9t\u00e9", "a\rb"])))
        framing = True
    if rng.random() < 0.03:
        headers += [(f"X-Pad-{i}", "p" * 200) for i in range(rng.choice([50, 200]))]
    head = f"{method} {path} {version}".rstrip() + "\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    ingest = method == "POST" and path.startswith("/v1/events") and path != "/v1/events/"
    return RawRequest(head.encode("utf-8", "surrogatepass") + payload, truncated,
                      framing or not head.isascii(), ingest)


# ------------------------------------------------------------------------------ checking


@dataclass
class Answer:
    status: int
    content_type: str
    text: str

    @property
    def kind(self) -> str:
        if not self.content_type.startswith(CONTENT_TYPE):
            return f"{self.status} {self.content_type.split(';')[0] or '-'}"
        return f"{self.status} {json.loads(self.text)['type'].removeprefix(TYPE_PREFIX)}"


def parse_answer(raw: bytes) -> Answer | None:
    if not raw:
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert len(parts) >= 2 and parts[0].startswith("HTTP/"), f"not an HTTP answer: {raw[:200]!r}"
    content_type = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            content_type = value.strip()
    return Answer(int(parts[1]), content_type, body.decode("utf-8", "replace"))


def check(answer: Answer, *, framing: bool, ingest: bool = True) -> None:
    text = answer.text
    for secret in SECRETS:
        assert secret not in text, f"a secret in the answer: {text[:300]}"
    assert leaks(text) is None, f"internals in the answer: {text[:300]}"
    assert answer.status < 500 or answer.status == 503, f"{answer.status}: {text[:300]}"
    if not ingest and answer.status < 400:
        return  # the dashboard, a redirect
    if answer.content_type.startswith(CONTENT_TYPE):
        problem = json.loads(text)
        assert answer.status in ALLOWED, f"{answer.status}: {text[:300]}"
        assert problem["status"] == answer.status, text[:300]
        assert problem["type"].startswith(TYPE_PREFIX) and problem["detail"], text[:300]
        if answer.status == 503:
            assert problem["type"] == TYPE_PREFIX + "xmpp-unavailable", text[:300]
        return
    # Only HTTP-level refusals come from aiohttp itself, in plain text.
    assert framing or answer.status == 400, f"{answer.status} {answer.content_type}: {text[:300]}"
    assert answer.status in (400, 413, 431), f"{answer.status}: {text[:300]}"


async def send_raw(port: int, request: RawRequest) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request.data)
        await writer.drain()
        if request.truncated:  # say so; aiohttp drops a half-closed connection unanswered
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), ANSWER_WITHIN)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def one_case(run: FuzzRun, n: int, gateway: Gateway, session: aiohttp.ClientSession,
                   seen: Counter[str]) -> None:
    rng = random.Random(f"{SEED}-{n}")
    if rng.random() < 0.4:
        body, headers = body_and_headers(rng)
        if rng.random() < 0.5:
            headers = {k: v for k, v in headers.items() if k != "Content-Type"}
            for name, value in content_type_headers(rng)[:1]:
                headers[name] = value
        if rng.random() < 0.5:
            for name in (HEADER_SITE, HEADER_TIMESTAMP, HEADER_SIGNATURE, "Authorization"):
                headers.pop(name, None)
            headers.update(dict(
                (k, v) for k, v in sign_headers(rng, body) if v.isascii() and v.isprintable()))
        with run.case(f"case {n} (seed {SEED}), client"):
            async with session.post(f"{gateway.url}/v1/events", data=body,
                                    headers=headers) as r:
                answer = Answer(r.status, r.headers.get("Content-Type", ""),
                                (await r.read()).decode("utf-8", "replace"))
            check(answer, framing=False)
            seen[answer.kind] += 1
        return
    request = raw_request(rng)
    with run.case(f"case {n} (seed {SEED}), raw: {request.data[:160]!r}"):
        answer = parse_answer(await send_raw(gateway.port, request))
        seen[answer.kind if answer is not None else "no answer"] += 1
        if answer is None:
            # Closing without an answer is fine only when the request never finished or
            # broke HTTP framing.
            assert request.truncated or request.framing, "no answer to a complete request"
            return
        check(answer, framing=request.framing or request.truncated, ingest=request.ingest)


async def test_fuzz_gateway(offline_gateway: Gateway, long_mode: bool, server_kind: str,
                            caplog: pytest.LogCaptureFixture) -> None:
    gateway = offline_gateway
    caplog.set_level(logging.ERROR, logger="gateway")
    with fuzz_run("gateway", long_mode=long_mode, server_kind=server_kind,
                  ci_cases=1000) as run:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(run.budget):
            queue.put_nowait(n)
        errors: list[BaseException] = []
        seen: Counter[str] = Counter()

        async def worker(session: aiohttp.ClientSession) -> None:
            while not queue.empty():
                n = queue.get_nowait()
                try:
                    await one_case(run, n, gateway, session, seen)
                except Exception as exc:  # an assertion, or anything else: counted, reported
                    errors.append(exc)

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(worker(session) for _ in range(8)))
            assert not errors, [str(e)[:400] for e in errors[:5]]
            unhandled = [r.getMessage() for r in caplog.records
                         if r.name.startswith("gateway") and r.levelno >= logging.ERROR]
            run.failures += len(unhandled)
            assert not unhandled, unhandled[:5]
            # The mix reached every stage of ingest (a generator of 401s proves little).
            for kind in ("400 malformed-json", "401 bad-signature", "401 unknown-site",
                         "403 source-mismatch", "415 unsupported-media-type",
                         "422 contract-violation", "503 xmpp-unavailable", "400 text/plain"):
                assert seen[kind] >= 1, (kind, seen)
            run.notes["answers"] = dict(seen.most_common())
            # Still itself afterwards.
            async with session.get(f"{gateway.url}/healthz") as r:
                assert r.status == 200
            doc = json.dumps(event_doc()).encode()
            async with session.post(f"{gateway.url}/v1/events", data=doc,
                                    headers=signed(doc)) as r:
                assert r.status == 503
                assert (await r.json(content_type=None))["type"] == \
                    TYPE_PREFIX + "xmpp-unavailable"
