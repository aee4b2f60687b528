"""The fake outside services: real protocol on loopback, chaos on demand, honest counters."""

from __future__ import annotations

import asyncio
import time
import xmlrpc.client
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from geopy.adapters import AioHTTPAdapter
from geopy.exc import GeocoderServiceError
from geopy.geocoders import Nominatim

from backchannel.errors import ConfigError
from simulator.chaos import Chaos, ChaosControl, load_profile
from simulator.services import FakeServices

TOKEN = "crm-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLE_PROFILE = Path(__file__).parent.parent / "simulator" / "chaos.example.toml"


@pytest_asyncio.fixture
async def fs() -> AsyncIterator[FakeServices]:
    async with FakeServices(crm_token=TOKEN, lists_token=TOKEN, seed=7) as services:
        yield services


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str, **params: Any) -> Any:
    async with http.get(url, params=params) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


# -- geocoder ---------------------------------------------------------------------------

async def test_search_answers_like_nominatim(
    fs: FakeServices, http: aiohttp.ClientSession
) -> None:
    places = await get_json(http, f"{fs.geocoder_url}/search", q="Toronto, ON, Canada",
                            format="json", addressdetails="1")
    assert len(places) == 1
    top = places[0]
    assert top["display_name"] == "Toronto, Ontario, Canada"
    assert abs(float(top["lat"]) - 43.706) < 0.01 and abs(float(top["lon"]) + 79.399) < 0.01
    assert top["address"]["country_code"] == "ca" and top["address"]["state"] == "Ontario"
    assert await get_json(http, f"{fs.geocoder_url}/search", q="Narnia", format="json") == []


async def test_search_disambiguates_by_region_and_country(
    fs: FakeServices, http: aiohttp.ClientSession
) -> None:
    url = f"{fs.geocoder_url}/search"
    paris = await get_json(http, url, q="Paris", format="json")
    assert [p["display_name"] for p in paris][:2] == [
        "Paris, France", "Paris, Texas, United States"]
    texas = await get_json(http, url, q="Paris, TX, USA", format="json")
    assert [p["display_name"] for p in texas] == ["Paris, Texas, United States"]
    assert await get_json(http, url, q="Paris", countrycodes="us", format="json") == texas
    structured = await get_json(http, url, city="Springfield", state="Missouri", format="json")
    assert [p["display_name"] for p in structured] == ["Springfield, Missouri, United States"]
    limited = await get_json(http, url, q="Springfield", limit="2", format="json")
    assert len(limited) == 2


async def test_reverse_finds_the_nearest_city(
    fs: FakeServices, http: aiohttp.ClientSession
) -> None:
    place = await get_json(http, f"{fs.geocoder_url}/reverse", lat="45.76", lon="4.84",
                           format="json")
    assert place["display_name"] == "Lyon, France"
    sea = await get_json(http, f"{fs.geocoder_url}/reverse", lat="0", lon="-140", format="json")
    assert sea == {"error": "Unable to geocode"}
    async with http.get(f"{fs.geocoder_url}/reverse", params={"lat": "x", "lon": "1"}) as resp:
        assert resp.status == 400
    async with http.get(f"{fs.geocoder_url}/search", params={"format": "json"}) as resp:
        assert resp.status == 400
    assert fs.geocoder.stats.failures == 2 and fs.geocoder.stats.successes == 2


async def test_geopy_nominatim_client_against_the_fake(fs: FakeServices) -> None:
    async with Nominatim(domain=fs.geocoder_domain, scheme="http", user_agent="backchannel-tests",
                         adapter_factory=AioHTTPAdapter, timeout=5) as geocoder:
        lyon = await geocoder.geocode("Lyon, France")
        assert lyon is not None and lyon.address == "Lyon, France"
        assert abs(lyon.latitude - 45.749) < 0.01 and abs(lyon.longitude - 4.848) < 0.01
        munich = await geocoder.geocode("Munich, Germany")  # an exonym: GeoNames says München
        assert munich is not None and munich.raw["name"] == "Munich"
        several = await geocoder.geocode("Springfield", exactly_one=False, limit=3)
        assert several is not None and len(several) == 3
        assert await geocoder.geocode("Atlantis, Narnia") is None
        back = await geocoder.reverse((40.71, -74.0))
        assert back is not None and back.address.startswith("New York City")
        fs.geocoder.control.set(Chaos(down=True))
        with pytest.raises(GeocoderServiceError):
            await geocoder.geocode("Lyon, France")
    assert fs.geocoder.stats.calls == 6 and fs.geocoder.stats.failures == 1
    assert [r.key for r in fs.geocoder.stats.history][:2] == ["Lyon, France", "Munich, Germany"]


# -- CRM and mailing list ---------------------------------------------------------------

async def test_crm_upserts_by_external_id(
    fs: FakeServices, http: aiohttp.ClientSession
) -> None:
    contact = {"external_id": "42", "email": "amy@example.com", "name": "Amy"}
    async with http.post(fs.crm_url, json=contact, headers=AUTH) as resp:
        assert resp.status == 201 and await resp.json() == {"id": "42", "created": True}
    async with http.post(fs.crm_url, json={**contact, "name": "Amy B."}, headers=AUTH) as resp:
        assert resp.status == 200 and (await resp.json())["created"] is False
    stats = fs.crm.stats
    assert stats.records == {"42": {**contact, "name": "Amy B."}}
    assert stats.writes["42"] == 2 and stats.duplicates == 1
    assert (stats.calls, stats.successes, stats.failures) == (2, 2, 0)


async def test_crm_refuses_bad_tokens_and_bad_bodies(
    fs: FakeServices, http: aiohttp.ClientSession
) -> None:
    contact = {"external_id": 1}
    async with http.post(fs.crm_url, json=contact) as resp:
        assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    async with http.post(fs.crm_url, json=contact, headers={"Authorization": "Bearer no"}) as r:
        assert r.status == 401
    async with http.post(fs.crm_url, json={"email": "x@example.com"}, headers=AUTH) as resp:
        assert resp.status == 400
    async with http.post(fs.crm_url, data=b"{not json", headers=AUTH) as resp:
        assert resp.status == 400
    async with http.post(fs.crm_url, json=[contact], headers=AUTH) as resp:
        assert resp.status == 400
    assert fs.crm.stats.records == {} and fs.crm.stats.failures == 5


async def xmlrpc_call(http: aiohttp.ClientSession, url: str, body: bytes | str,
                      headers: dict[str, str] = AUTH) -> tuple[Any, ...]:
    payload = body.encode() if isinstance(body, str) else body
    async with http.post(url, data=payload,
                         headers={**headers, "Content-Type": "text/xml"}) as resp:
        assert resp.status == 200
        params, _ = xmlrpc.client.loads(await resp.read())
        return params


async def test_crm_xmlrpc_upsert_and_faults(
    fs: FakeServices, http: aiohttp.ClientSession
) -> None:
    call = xmlrpc.client.dumps(({"external_id": "7", "name": "Zoë"},),
                               methodname="crm.upsert_contact", encoding="utf-8")
    assert await xmlrpc_call(http, fs.crm_xmlrpc_url, call) == ({"id": "7", "created": True},)
    assert await xmlrpc_call(http, fs.crm_xmlrpc_url, call) == ({"id": "7", "created": False},)
    assert fs.crm_xmlrpc.stats.records["7"]["name"] == "Zoë"

    wrong = xmlrpc.client.dumps(({},), methodname="crm.delete_everything")
    with pytest.raises(xmlrpc.client.Fault) as fault:
        await xmlrpc_call(http, fs.crm_xmlrpc_url, wrong)
    assert fault.value.faultCode == -32601
    bomb = ('<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><methodCall>'
            "<methodName>crm.upsert_contact</methodName><params><param><value>"
            "<string>&b;</string></value></param></params></methodCall>")
    with pytest.raises(xmlrpc.client.Fault) as fault:
        await xmlrpc_call(http, fs.crm_xmlrpc_url, bomb)
    assert fault.value.faultCode == -32700
    async with http.post(fs.crm_xmlrpc_url, data=call.encode()) as resp:  # no token
        assert resp.status == 401
    assert fs.crm_xmlrpc.stats.writes["7"] == 2 and fs.crm_xmlrpc.stats.failures == 3
    assert fs.crm.stats.calls == 0  # the JSON CRM counts separately


async def test_mailing_list_dedupes_by_email(
    fs: FakeServices, http: aiohttp.ClientSession
) -> None:
    url = fs.list_url("newsletter")
    async with http.post(url, json={"email": "Amy@Example.com"}, headers=AUTH) as resp:
        assert resp.status == 201
    async with http.post(url, json={"email": "amy@example.com "}, headers=AUTH) as resp:
        assert resp.status == 200
    async with http.post(fs.list_url("offers"), json={"email": "amy@example.com"},
                         headers=AUTH) as resp:
        assert resp.status == 201
    async with http.post(url, json={"email": "not-an-address"}, headers=AUTH) as resp:
        assert resp.status == 400
    assert sorted(fs.lists.stats.records) == [
        "newsletter:amy@example.com", "offers:amy@example.com"]
    assert fs.lists.stats.duplicates == 1


# -- chaos ------------------------------------------------------------------------------

async def post_status(http: aiohttp.ClientSession, fs: FakeServices, n: int = 1) -> list[int]:
    statuses = []
    for i in range(n):
        async with http.post(fs.crm_url, json={"external_id": i}, headers=AUTH) as resp:
            statuses.append(resp.status)
    return statuses


async def test_error_rate_one_fails_every_call(
    fs: FakeServices, http: aiohttp.ClientSession
) -> None:
    fs.crm.control.set(Chaos(error_rate=1.0, retry_after=0.5))
    async with http.post(fs.crm_url, json={"external_id": 1}, headers=AUTH) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "0.5"
    assert await post_status(http, fs, 9) == [503] * 9
    assert (fs.crm.stats.calls, fs.crm.stats.failures, fs.crm.stats.records) == (10, 10, {})
    fs.crm.control.set(Chaos())
    assert await post_status(http, fs) == [201]


async def test_error_rate_is_a_seeded_fraction(
    fs: FakeServices, http: aiohttp.ClientSession
) -> None:
    fs.crm.control.set(Chaos(error_rate=0.5, error_status=500))
    statuses = await post_status(http, fs, 60)
    assert set(statuses) == {201, 500}
    assert 15 <= statuses.count(500) <= 45
    a, b = ChaosControl("x", Chaos(error_rate=0.5, jitter=0.1), seed=3), ChaosControl(
        "x", Chaos(error_rate=0.5, jitter=0.1), seed=3)
    assert [a.decide() for _ in range(20)] == [b.decide() for _ in range(20)]


async def test_latency_is_added(fs: FakeServices, http: aiohttp.ClientSession) -> None:
    fs.lists.control.set(Chaos(latency=0.2, jitter=0.05))
    started = time.monotonic()
    calls = [http.post(fs.list_url("l"), json={"email": f"u{i}@example.com"}, headers=AUTH)
             for i in range(4)]
    responses = await asyncio.gather(*calls)
    elapsed = time.monotonic() - started
    for resp in responses:
        assert resp.status == 201
        resp.release()
    assert 0.15 <= elapsed < 1.0  # concurrent: one latency, not four
    assert fs.lists.stats.peak_in_flight == 4


async def test_outage_window_then_recovery(fs: FakeServices, http: aiohttp.ClientSession) -> None:
    fs.geocoder.control.set(Chaos(outages=((0.0, 0.3),)))
    fs.geocoder.control.restart_clock()
    started = time.monotonic()
    url = f"{fs.geocoder_url}/search"
    async with http.get(url, params={"q": "Lyon"}) as resp:
        assert resp.status == 503
    deadline = started + 3.0
    while True:
        async with http.get(url, params={"q": "Lyon"}) as resp:
            if resp.status == 200:
                break
            assert resp.status == 503
        assert time.monotonic() < deadline, "the outage never ended"
        await asyncio.sleep(0.02)  # pacing a poll that has a deadline, not a wait-and-hope
    assert time.monotonic() - started >= 0.3


async def test_down_and_reset(fs: FakeServices, http: aiohttp.ClientSession) -> None:
    fs.crm.control.set(Chaos(down=True))
    assert await post_status(http, fs, 2) == [503, 503]
    fs.crm.control.set(Chaos(down=True, reset=True))
    with pytest.raises(aiohttp.ClientError):
        await post_status(http, fs)
    assert fs.crm.stats.failures == 3 and fs.crm.stats.history[-1].status == 0


async def test_rate_limit_answers_429(fs: FakeServices, http: aiohttp.ClientSession) -> None:
    fs.geocoder.control.set(Chaos(rate_limit=2))
    statuses = []
    for _ in range(5):
        async with http.get(f"{fs.geocoder_url}/search", params={"q": "Oslo"}) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                assert resp.headers["Retry-After"] == "1"
    assert statuses == [200, 200, 429, 429, 429]


async def test_wait_until_wakes_on_calls_and_times_out(
    fs: FakeServices, http: aiohttp.ClientSession
) -> None:
    waiter = asyncio.create_task(fs.crm.stats.wait_until(lambda s: s.successes >= 2, timeout=5))
    await post_status(http, fs, 2)
    await waiter
    with pytest.raises(TimeoutError):
        await fs.crm.stats.wait_until(lambda s: s.successes >= 3, timeout=0.05)


async def test_stop_is_fast_with_calls_stuck_in_latency(http: aiohttp.ClientSession) -> None:
    services = await FakeServices().start()
    services.crm.control.set(Chaos(latency=30))
    call = asyncio.create_task(post_status(http, services))
    await services.crm.stats.wait_until(lambda s: s.in_flight == 1, timeout=5)
    started = time.monotonic()
    await services.stop()
    assert time.monotonic() - started < 0.5
    assert await call == [503]  # cut short and answered as a failure, not served


# -- chaos settings and profiles --------------------------------------------------------

def test_chaos_validates_itself() -> None:
    with pytest.raises(ConfigError, match="error_rate"):
        Chaos(error_rate=1.5)
    with pytest.raises(ConfigError, match="location"):
        Chaos(error_status=302)
    with pytest.raises(ConfigError, match="outages"):
        Chaos(outages=((5.0, 1.0),))
    with pytest.raises(ConfigError, match="latency"):
        Chaos(latency=-1)
    assert Chaos(error_status=307, location="http://elsewhere.example/").location


def test_example_profile_loads() -> None:
    profile = load_profile(EXAMPLE_PROFILE)
    assert set(profile) == {"geocoder", "crm", "crm_xmlrpc", "lists", "site"}
    assert profile["geocoder"].outages == ((10.0, 20.0),)
    assert profile["lists"].reset is True
    services = FakeServices(chaos=profile)
    assert services.geocoder.control.chaos.rate_limit == 1


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[geocodr]\nlatency = 1\n", "geocodr", "unknown service"),
        ("[crm]\nlatnecy = 1\n", "crm.latnecy", "unknown key"),
        ("[crm]\nlatency = 'slow'\n", "crm.latency", "must be a number"),
        ("[crm]\nerror_rate = 2\n", "crm.error_rate", "between 0 and 1"),
        ("[crm]\noutages = [[1]]\n", "crm.outages", "pair"),
        ("[crm]\ndown = 1\n", "crm.down", "true or false"),
        ("crm = 3\n", "crm", "must be a table"),
    ],
)
def test_profile_errors_name_file_and_key(tmp_path: Path, text: str, key: str,
                                          reason: str) -> None:
    path = tmp_path / "chaos.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert err.value.key == key and err.value.file == str(path)
    assert reason in str(err.value) and str(path) in str(err.value)


def test_profile_unreadable_or_not_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[crm\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile(bad)
