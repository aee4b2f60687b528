"""Gateway authentication: who may post, and what each refusal says.

The HTTP tests run a real gateway whose XMPP connection is never started: every request
here is refused (or answered 503) before anything would be published.
"""

from __future__ import annotations

import json
import time

import aiohttp
import pytest

from gateway.app import Gateway
from gateway.auth import (
    HEADER_SIGNATURE,
    HEADER_SITE,
    HEADER_TIMESTAMP,
    Authenticator,
    signature,
)
from gateway.problems import CONTENT_TYPE, TYPE_PREFIX, Problem
from tests.gateway_support import BLOG, NO_SECRET, SHOP, encode, event_doc, post_events, signed

NOW = 1_733_324_400.0
BODY = b'{"hello": "world"}'


def auth(now: float = NOW) -> Authenticator:
    return Authenticator((SHOP, BLOG, NO_SECRET), tolerance=300, clock=lambda: now)


def refusal(headers: dict[str, str], body: bytes = BODY, now: float = NOW) -> Problem:
    with pytest.raises(Problem) as caught:
        auth(now).authenticate(headers, body)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")
    return caught.value


# ---------------------------------------------------------------------------- unit


def test_signature_is_hex_hmac_of_timestamp_dot_body() -> None:
    # Independently computed: printf '1733324400.{"hello": "world"}' |
    #   openssl dgst -sha256 -hmac shop-secret
    import hashlib
    import hmac

    expected = hmac.new(b"shop-secret", b'1733324400.{"hello": "world"}',
                        hashlib.sha256).hexdigest()
    assert signature("shop-secret", 1733324400, BODY) == f"v1={expected}"


def test_good_signature_names_the_site() -> None:
    assert auth().authenticate(signed(BODY, SHOP, NOW), BODY) is SHOP
    assert auth().authenticate(signed(BODY, BLOG, NOW), BODY) is BLOG


def test_one_of_several_signatures_may_match_for_secret_rotation() -> None:
    headers = signed(BODY, SHOP, NOW)
    good = headers[HEADER_SIGNATURE]
    headers[HEADER_SIGNATURE] = f"v1={'0' * 64}, {good}"
    assert auth().authenticate(headers, BODY) is SHOP


def test_uppercase_hex_is_accepted() -> None:
    headers = signed(BODY, SHOP, NOW)
    headers[HEADER_SIGNATURE] = "v1=" + headers[HEADER_SIGNATURE][3:].upper()
    assert auth().authenticate(headers, BODY) is SHOP


@pytest.mark.security
def test_wrong_signature_says_how_to_sign() -> None:
    headers = signed(BODY, SHOP, NOW)
    problem = refusal(headers, BODY + b" ")
    assert problem.kind == "bad-signature"
    assert "signature does not match" in problem.detail


@pytest.mark.security
def test_signature_with_another_sites_secret_is_refused() -> None:
    headers = signed(BODY, BLOG, NOW)
    headers[HEADER_SITE] = "shop"
    assert refusal(headers).kind == "bad-signature"


@pytest.mark.security
def test_malformed_signature_header() -> None:
    headers = signed(BODY, SHOP, NOW)
    headers[HEADER_SIGNATURE] = "sha256=abc"
    problem = refusal(headers)
    assert problem.kind == "bad-signature"
    assert "v1=" in problem.detail


@pytest.mark.parametrize("skew", [301, -301, 86_400])
@pytest.mark.security
def test_stale_or_future_timestamp(skew: float) -> None:
    headers = signed(BODY, SHOP, NOW - skew)
    problem = refusal(headers)
    assert problem.kind == "stale-timestamp"
    assert f"{abs(skew)} s" in problem.detail
    assert "tolerance is 300 s" in problem.detail
    assert ("old" if skew > 0 else "in the future") in problem.detail


def test_timestamp_inside_tolerance_is_fine() -> None:
    assert auth().authenticate(signed(BODY, SHOP, NOW - 299), BODY) is SHOP


@pytest.mark.parametrize("value", ["", "soon", "1.5", "-5", "١٢٣", "9" * 40])
@pytest.mark.security
def test_timestamp_must_be_whole_unix_seconds(value: str) -> None:
    headers = signed(BODY, SHOP, NOW)
    headers[HEADER_TIMESTAMP] = value
    assert refusal(headers).kind == "bad-timestamp"


@pytest.mark.parametrize("missing,kind", [(HEADER_TIMESTAMP, "missing-timestamp"),
                                          (HEADER_SIGNATURE, "missing-signature")])
@pytest.mark.security
def test_missing_header_is_named(missing: str, kind: str) -> None:
    headers = signed(BODY, SHOP, NOW)
    del headers[missing]
    problem = refusal(headers)
    assert problem.kind == kind
    assert missing in problem.detail


@pytest.mark.security
def test_no_credentials_at_all() -> None:
    problem = refusal({"Content-Type": "application/json"})
    assert problem.kind == "missing-credentials"


@pytest.mark.security
def test_unknown_site_and_site_without_secret_look_the_same() -> None:
    unknown = signed(BODY, SHOP, NOW)
    unknown[HEADER_SITE] = "nosuchsite"
    no_secret = signed(BODY, SHOP, NOW)
    no_secret[HEADER_SITE] = NO_SECRET.name
    first, second = refusal(unknown), refusal(no_secret)
    assert (first.kind, first.detail) == (second.kind, second.detail) == (
        "unknown-site", "unknown site")
    for site in ("shop", "blog", "pull"):
        assert site not in first.detail


def test_bearer_token() -> None:
    assert auth().authenticate({"Authorization": "Bearer shop-token"}, BODY) is SHOP
    assert auth().authenticate({"Authorization": "bearer shop-token",
                                HEADER_SITE: "shop"}, BODY) is SHOP


@pytest.mark.parametrize("headers,kind", [
    ({"Authorization": "Bearer nope"}, "bad-token"),
    ({"Authorization": "Bearer shop-token", HEADER_SITE: "blog"}, "bad-token"),
    ({"Authorization": "Basic c2hvcDpzZWNyZXQ="}, "bad-authorization"),
    ({"Authorization": "Bearer "}, "bad-authorization"),
])
@pytest.mark.security
def test_bad_bearer(headers: dict[str, str], kind: str) -> None:
    assert refusal(headers).kind == kind


@pytest.mark.security
def test_a_site_without_token_cannot_use_an_empty_bearer() -> None:
    # BLOG has no token: an empty token must never match it.
    assert refusal({"Authorization": "Bearer  "}).kind == "bad-authorization"


@pytest.mark.security
def test_secrets_never_appear_in_refusals() -> None:
    cases = [
        {"Authorization": "Bearer shop-token-x"},
        {**signed(BODY, SHOP, NOW), HEADER_SIGNATURE: "v1=00"},
        signed(BODY, SHOP, NOW - 1000),
    ]
    for headers in cases:
        text = json.dumps(refusal(headers).to_dict())
        assert "shop-secret" not in text and "shop-token" not in text


# ---------------------------------------------------------------------------- HTTP




@pytest.mark.security
async def test_http_refusals_are_problem_json(offline_gateway: Gateway) -> None:
    url = offline_gateway.url
    body = encode(event_doc())
    stale = signed(body, SHOP, time.time() - 3600)
    wrong = {**signed(body), HEADER_SIGNATURE: "v1=" + "ab" * 32}
    unknown = {**signed(body), HEADER_SITE: "nosuchsite"}
    async with aiohttp.ClientSession() as session:
        for headers, kind in ((stale, "stale-timestamp"), (wrong, "bad-signature"),
                              (unknown, "unknown-site"),
                              ({"Content-Type": "application/json"}, "missing-credentials")):
            async with session.post(f"{url}/v1/events", data=body, headers=headers) as r:
                assert r.status == 401, kind
                assert r.headers["Content-Type"].startswith(CONTENT_TYPE)
                problem = await r.json(content_type=None)
                assert problem["type"] == TYPE_PREFIX + kind
                assert problem["status"] == 401
                assert problem["title"] == "Unauthorized"
                assert problem["detail"]


@pytest.mark.security
async def test_authentication_comes_before_any_other_check(offline_gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        status, problem, _ = await post_events(
            session, offline_gateway.url, b"not json",
            headers={"Content-Type": "text/plain"})
    assert status == 401 and problem["type"].endswith("missing-credentials")


async def test_signed_request_without_xmpp_gets_503_with_retry_after(
        offline_gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        status, problem, headers = await post_events(session, offline_gateway.url, event_doc())
        batch = [event_doc(), event_doc()]
        bstatus, bproblem, _ = await post_events(session, offline_gateway.url,
                                                 {"events": batch})
        bearer_status, _, _ = await post_events(
            session, offline_gateway.url, event_doc(),
            headers={"Authorization": "Bearer shop-token", "Content-Type": "application/json"})
    assert status == 503 and headers["Retry-After"].isdigit()
    assert problem["type"].endswith("xmpp-unavailable")
    assert bstatus == 503
    assert bproblem["stored"] == [] and bproblem["not_stored"] == [e["id"] for e in batch]
    assert bearer_status == 503  # authenticated, then refused for want of XMPP


@pytest.mark.security
async def test_event_status_needs_authentication(offline_gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{offline_gateway.url}/v1/events/abc") as r:
            assert r.status == 401
        headers = signed(b"", SHOP)
        async with session.get(f"{offline_gateway.url}/v1/events/abc", headers=headers) as r:
            assert r.status == 503  # authenticated; the nodes cannot be read
