"""Geocoding providers against a real local HTTP server that speaks Nominatim's /search."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from backchannel.config import Secret
from backchannel.errors import ConfigError, PermanentTaskError, TemporaryTaskError
from workers.geocoding import GeopyProvider, OfflineProvider, build_geocoder
from workers.geocoding.providers import DEFAULT_USER_AGENT, public_nominatim_limiter

AGENT = "backchannel-tests/1.0 (ops@example.org)"
API_KEY = "sk-very-secret-0123456789"

BERLIN = {
    "place_id": 1, "lat": "52.5170365", "lon": "13.3888599", "importance": 0.88,
    "display_name": "Berlin, Deutschland",
    "address": {"city": "Berlin", "state": "Berlin", "country": "Deutschland",
                "country_code": "de"},
}


@dataclass
class FakeNominatim:
    """What the server saw; answers depend on the query text."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    async def search(self, request: web.Request) -> web.StreamResponse:
        query = request.query.get("q", "")
        self.requests.append({"q": query, "format": request.query.get("format"),
                              "addressdetails": request.query.get("addressdetails"),
                              "agent": request.headers.get("User-Agent")})
        if request.query.get("format") not in ("json", "jsonv2"):
            return web.json_response({"error": "format"}, status=400)
        if query == "busy":
            return web.json_response({"error": "busy"}, status=503,
                                     headers={"Retry-After": "3"})
        if query == "slow down":
            return web.json_response({"error": "too many"}, status=429,
                                     headers={"Retry-After": "7"})
        if query == "bad query":
            return web.json_response({"error": "bad"}, status=400)
        if query == "broken":
            return web.json_response({"error": "oops"}, status=500)
        if query == "not json":
            return web.Response(text="<html>proxy error</html>", content_type="text/html")
        if query.lower().startswith("berlin"):
            return web.json_response([BERLIN])
        return web.json_response([])

    async def opencage(self, request: web.Request) -> web.StreamResponse:
        # Echo the key the way careless services do; it must not reach our messages.
        return web.json_response({"status": {"message": f"bad key {request.query.get('key')}"}},
                                 status=401)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeNominatim, str]]:
    state = FakeNominatim()
    app = web.Application()
    app.router.add_get("/search", state.search)
    app.router.add_get("/geocode/v1/json", state.opencage)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield state, f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def nominatim(fake: tuple[FakeNominatim, str]) -> AsyncIterator[GeopyProvider]:
    provider = GeopyProvider("nominatim", {"domain": fake[1], "scheme": "http"},
                             user_agent=AGENT, timeout=5.0)
    try:
        yield provider
    finally:
        await provider.aclose()


async def test_found(nominatim: GeopyProvider, fake: tuple[FakeNominatim, str]) -> None:
    found = await nominatim.geocode("Berlin, Germany")
    assert found is not None
    assert (found.latitude, found.longitude) == (52.5170365, 13.3888599)
    assert (found.city, found.region, found.country_code, found.country) == (
        "Berlin", "Berlin", "DE", "Deutschland")
    assert found.display_name == "Berlin, Deutschland"
    assert (found.provider, found.confidence) == ("nominatim", 0.88)
    seen = fake[0].requests[-1]
    assert seen == {"q": "Berlin, Germany", "format": "json", "addressdetails": "1",
                    "agent": AGENT}
    assert not nominatim.public_nominatim and nominatim.limiter is None


async def test_no_match_and_empty_query(nominatim: GeopyProvider,
                                        fake: tuple[FakeNominatim, str]) -> None:
    assert await nominatim.geocode("Atlantis") is None
    calls = len(fake[0].requests)
    assert await nominatim.geocode("   ") is None
    assert len(fake[0].requests) == calls  # nothing to ask


async def test_503_is_temporary(nominatim: GeopyProvider) -> None:
    with pytest.raises(TemporaryTaskError) as caught:
        await nominatim.geocode("busy")
    assert "503" in str(caught.value)
    assert caught.value.retry_after == 3.0


async def test_500_is_temporary(nominatim: GeopyProvider) -> None:
    with pytest.raises(TemporaryTaskError, match="500"):
        await nominatim.geocode("broken")


async def test_not_json_is_temporary(nominatim: GeopyProvider) -> None:
    with pytest.raises(TemporaryTaskError) as caught:
        await nominatim.geocode("not json")
    assert "proxy error" not in str(caught.value)


async def test_429_is_temporary_with_retry_after(nominatim: GeopyProvider) -> None:
    with pytest.raises(TemporaryTaskError) as caught:
        await nominatim.geocode("slow down")
    assert caught.value.retry_after == 7.0
    assert "rate limited" in str(caught.value)


async def test_400_is_permanent(nominatim: GeopyProvider) -> None:
    with pytest.raises(PermanentTaskError, match="400"):
        await nominatim.geocode("bad query")


async def test_connection_refused_is_temporary() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with GeopyProvider("nominatim", {"domain": f"127.0.0.1:{port}", "scheme": "http"},
                             user_agent=AGENT, timeout=5.0) as provider:
        with pytest.raises(TemporaryTaskError, match="unavailable"):
            await provider.geocode("Berlin")


async def test_api_key_never_reaches_the_message(fake: tuple[FakeNominatim, str]) -> None:
    options = {"api_key": Secret(API_KEY), "domain": fake[1], "scheme": "http"}
    async with GeopyProvider("opencage", options, user_agent=AGENT, timeout=5.0) as provider:
        with pytest.raises(PermanentTaskError) as caught:
            await provider.geocode("Berlin")
    assert "401" in str(caught.value)
    assert API_KEY not in str(caught.value) and API_KEY not in repr(caught.value)


async def test_closed_provider_refuses_work(fake: tuple[FakeNominatim, str]) -> None:
    provider = GeopyProvider("nominatim", {"domain": fake[1], "scheme": "http"},
                             user_agent=AGENT, timeout=5.0)
    await provider.aclose()
    await provider.aclose()  # idempotent
    with pytest.raises(RuntimeError):
        await provider.geocode("Berlin")


@pytest.mark.parametrize("agent", [DEFAULT_USER_AGENT, "", "geopy/2.5.0", "my-application"])
def test_public_nominatim_needs_an_identifying_user_agent(agent: str) -> None:
    with pytest.raises(ConfigError) as caught:
        GeopyProvider("nominatim", {}, user_agent=agent, timeout=1.0)
    assert caught.value.key == "services.geocode.user_agent"


def test_build_public_nominatim_without_user_agent_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        build_geocoder({"provider": "nominatim"}, timeout=1.0)
    assert caught.value.key == "services.geocode.user_agent"


async def test_public_nominatim_instances_share_one_limiter() -> None:
    one = build_geocoder({"provider": "nominatim", "user_agent": AGENT}, timeout=1.0)
    two = build_geocoder({"provider": "Nominatim", "user_agent": AGENT,
                          "domain": "nominatim.openstreetmap.org"}, timeout=1.0)
    try:
        assert isinstance(one, GeopyProvider) and isinstance(two, GeopyProvider)
        assert one.public_nominatim and two.public_nominatim
        assert one.limiter is two.limiter is public_nominatim_limiter()
        assert one.limiter.max_rate == 1 and one.limiter.time_period == 1.0
    finally:
        await one.aclose()  # no request was made: closing opens nothing on the network
        await two.aclose()


def test_unknown_provider_names_the_key_and_some_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        build_geocoder({"provider": "teleport"}, timeout=1.0)
    assert caught.value.key == "services.geocode.provider"
    assert "nominatim" in str(caught.value) and "offline" in str(caught.value)


def test_unknown_provider_option_names_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        build_geocoder({"provider": "nominatim", "user_agent": AGENT, "colour": "red"},
                       timeout=1.0)
    assert caught.value.key == "services.geocode.colour"


async def test_default_is_offline() -> None:
    geocoder = build_geocoder({}, timeout=1.0)
    assert isinstance(geocoder, OfflineProvider)
    found = await geocoder.geocode("Munich, Germany")
    await geocoder.aclose()
    assert found is not None and found.city == "Munich" and found.provider == "offline"
    assert await geocoder.geocode("qwxz zzkq") is None
