"""Fake outside services on one loopback aiohttp server: geocoder, CRM, mailing list.

Why: the workers call slow, flaky outside services. Tests, benchmarks and the demo need
stand-ins that speak the real protocols, cost nothing, and can be told to misbehave
(:mod:`simulator.chaos`) while counting exactly what they received, so a test can say
"the breaker kept calls low" or "each contact was written once".

One app, four services, each with its own chaos knob and counters:

========================  =============================================================
``GET /geocoder/search``  Nominatim-compatible forward geocoding (``q=`` or structured
                          ``city=/state=/country=``), answered from GeoNames cities15000.
``GET /geocoder/reverse`` Nominatim-compatible reverse geocoding (nearest city).
``POST /crm/contacts``    JSON upsert keyed by ``external_id``; 201 created, 200 updated.
``POST /crm/xmlrpc``      XML-RPC ``crm.upsert_contact(struct)``, same semantics.
``POST /lists/{list}/members``  JSON subscribe keyed by list and ``email``.
========================  =============================================================

geopy's Nominatim takes a path in ``domain`` (it builds ``scheme://domain/search``), so
``Nominatim(domain=fs.geocoder_domain, scheme="http", user_agent=...)`` works against the
shared server; no separate port is needed. When a token is configured the CRM (both
protocols) and the list want ``Authorization: Bearer <token>`` and answer 401 otherwise.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from backchannel.errors import ConfigError
from simulator.chaos import Chaos, ChaosControl
from simulator.gazetteer import City, gazetteer
from simulator.httpfake import (
    MAX_BODY,
    Handler,
    LocalServer,
    ServiceStats,
    XmlRpcError,
    guarded,
    parse_xmlrpc,
    xmlrpc_fault,
    xmlrpc_result,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = ("geocoder", "crm", "crm_xmlrpc", "lists")
XMLRPC_UPSERT = "crm.upsert_contact"
LICENCE = "Data (c) GeoNames contributors, CC BY 4.0 (simulated service)"

Outcome = tuple[web.StreamResponse, bool, str | None]


@dataclass
class FakeService:
    """One simulated service: its chaos knob and what it has seen."""

    name: str
    control: ChaosControl
    stats: ServiceStats


def nominatim_place(city: City, addressdetails: bool = False) -> dict[str, Any]:
    """A city as Nominatim's ``format=json`` shows a place (coordinates as strings)."""
    d = 0.05
    place: dict[str, Any] = {
        "place_id": city.geonameid,
        "licence": LICENCE,
        "osm_type": "node",
        "osm_id": city.geonameid,
        "lat": f"{city.latitude:.5f}",
        "lon": f"{city.longitude:.5f}",
        "class": "place",
        "type": "city",
        "place_rank": 16,
        "importance": round(min(1.0, 0.3 + math.log10(max(city.population, 1)) / 10), 4),
        "addresstype": "city",
        "name": city.name,
        "display_name": city.display_name,
        "boundingbox": [f"{city.latitude - d:.5f}", f"{city.latitude + d:.5f}",
                        f"{city.longitude - d:.5f}", f"{city.longitude + d:.5f}"],
    }
    if addressdetails:
        address = {"city": city.name, "country": city.country,
                   "country_code": city.country_code.lower()}
        if city.region:
            address["state"] = city.region
        place["address"] = address
    return place


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _authorized(request: web.Request, token: str | None) -> bool:
    if not token:
        return True
    offered = request.headers.get("Authorization", "")
    return hmac.compare_digest(offered.encode(), f"Bearer {token}".encode())


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
    )


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _external_id(contact: Mapping[str, Any]) -> str | None:
    value = contact.get("external_id")
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        return None
    return str(value)


class FakeServices:
    """The fake outside services on one server. Use ``async with FakeServices() as fs``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        crm_token: str | None = None,
        lists_token: str | None = None,
        chaos: Mapping[str, Chaos] | None = None,
        seed: int | None = None,
        history_limit: int = 10_000,
    ) -> None:
        self.crm_token = crm_token
        self.lists_token = lists_token
        self._closing = asyncio.Event()
        self._services = {
            name: FakeService(name, ChaosControl(name, seed=seed),
                              ServiceStats(name, history_limit=history_limit))
            for name in SERVICE_NAMES
        }
        if chaos:
            self.apply_profile(chaos)
        app = web.Application(client_max_size=MAX_BODY)
        route = self._route
        app.router.add_get("/geocoder/search", route("geocoder", self._search))
        app.router.add_get("/geocoder/reverse", route("geocoder", self._reverse))
        app.router.add_post("/crm/contacts", route("crm", self._crm_upsert))
        app.router.add_post("/crm/xmlrpc", route("crm_xmlrpc", self._crm_xmlrpc))
        app.router.add_post("/lists/{list}/members", route("lists", self._subscribe))
        self._server = LocalServer(app, host, port)

    def _route(self, name: str, handler: Handler) -> Callable[[web.Request], Awaitable[
            web.StreamResponse]]:
        svc = self._services[name]
        return guarded(svc.control, svc.stats, self._closing, handler)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> Self:
        # Build the city index off the loop, once per process (about 1.5 s), so no
        # request (and no latency benchmark) pays for it.
        await asyncio.to_thread(lambda: gazetteer().warm())
        self._closing.clear()
        await self._server.start()
        for svc in self._services.values():
            svc.control.restart_clock()
        log.info("fake services listening on %s", self.url)
        return self

    async def stop(self) -> None:
        self._closing.set()
        await self._server.stop()
        log.info("fake services stopped")

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- access ----------------------------------------------------------------------

    @property
    def geocoder(self) -> FakeService:
        return self._services["geocoder"]

    @property
    def crm(self) -> FakeService:
        return self._services["crm"]

    @property
    def crm_xmlrpc(self) -> FakeService:
        return self._services["crm_xmlrpc"]

    @property
    def lists(self) -> FakeService:
        return self._services["lists"]

    def service(self, name: str) -> FakeService:
        try:
            return self._services[name]
        except KeyError:
            known = ", ".join(SERVICE_NAMES)
            raise KeyError(f"no fake service {name!r} (known: {known})") from None

    def apply_profile(self, profile: Mapping[str, Chaos]) -> None:
        """Set each named service's chaos; a ``site`` entry is the demo site's, skipped."""
        for name, chaos in profile.items():
            if name == "site":
                continue
            if name not in self._services:
                raise ConfigError(f"unknown service (known: {', '.join(SERVICE_NAMES)})",
                                  key=name)
            self._services[name].control.set(chaos)

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def geocoder_url(self) -> str:
        return f"{self.url}/geocoder"

    @property
    def geocoder_domain(self) -> str:
        """What geopy's ``Nominatim(domain=..., scheme="http")`` wants."""
        return self.geocoder_url.removeprefix("http://")

    @property
    def crm_url(self) -> str:
        return f"{self.url}/crm/contacts"

    @property
    def crm_xmlrpc_url(self) -> str:
        return f"{self.url}/crm/xmlrpc"

    def list_url(self, list_name: str) -> str:
        return f"{self.url}/lists/{list_name}/members"

    # -- geocoder --------------------------------------------------------------------

    async def _search(self, request: web.Request) -> Outcome:
        q = request.query
        if q.get("format", "json") not in ("json", "jsonv2"):
            return _bad_request("only format=json and jsonv2 are simulated"), False, None
        try:
            limit = min(max(int(q.get("limit", "10")), 1), 50)
        except ValueError:
            return _bad_request("limit must be an integer"), False, None
        gaz = gazetteer()
        if "q" in q:
            key = q["q"]
            cities = gaz.search(key)
        elif "city" in q:
            key = ", ".join(q[k] for k in ("city", "state", "country") if q.get(k))
            cities = gaz.structured(q["city"], q.get("state", ""), q.get("country", ""))
        else:
            return _bad_request("Nothing to search for."), False, None
        codes = {c.strip().upper() for c in q.get("countrycodes", "").split(",") if c.strip()}
        if codes:
            cities = [c for c in cities if c.country_code in codes]
        details = q.get("addressdetails") in ("1", "true")
        places = [nominatim_place(c, details) for c in cities[:limit]]
        log.debug("geocoder: %r -> %d places", key, len(places))
        return web.json_response(places), True, key

    async def _reverse(self, request: web.Request) -> Outcome:
        q = request.query
        try:
            lat, lon = float(q["lat"]), float(q["lon"])
        except (KeyError, ValueError):
            return _bad_request("Need coordinates or OSM object to lookup."), False, None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return _bad_request("Invalid coordinates."), False, None
        key = f"{lat},{lon}"
        city = gazetteer().nearest(lat, lon)
        if city is None:
            return web.json_response({"error": "Unable to geocode"}), True, key
        details = q.get("addressdetails", "1") in ("1", "true")
        return web.json_response(nominatim_place(city, details)), True, key

    # -- CRM, JSON -------------------------------------------------------------------

    async def _crm_upsert(self, request: web.Request) -> Outcome:
        if not _authorized(request, self.crm_token):
            return _unauthorized(), False, None
        contact = await _json_object(request)
        if contact is None:
            return _bad_request("body must be a JSON object"), False, None
        ext = _external_id(contact)
        if ext is None:
            return _bad_request("external_id is required (string or integer)"), False, None
        created = self.crm.stats.record(ext, contact)
        log.debug("crm: contact %s %s", ext, "created" if created else "updated")
        body = {"id": ext, "created": created}
        return web.json_response(body, status=201 if created else 200), True, ext

    # -- CRM, XML-RPC ----------------------------------------------------------------

    async def _crm_xmlrpc(self, request: web.Request) -> Outcome:
        if not _authorized(request, self.crm_token):
            return _unauthorized(), False, None
        try:
            method, params = parse_xmlrpc(await request.read())
        except XmlRpcError as exc:
            return xmlrpc_fault(exc.code, str(exc)), False, None
        if method != XMLRPC_UPSERT:
            return xmlrpc_fault(-32601, f"unknown method {method!r}"), False, None
        if len(params) != 1 or not isinstance(params[0], dict):
            return xmlrpc_fault(-32602, f"{XMLRPC_UPSERT} takes one struct"), False, None
        contact = params[0]
        ext = _external_id(contact)
        if ext is None:
            return xmlrpc_fault(-32602, "external_id is required"), False, None
        created = self.crm_xmlrpc.stats.record(ext, contact)
        return xmlrpc_result({"id": ext, "created": created}), True, ext

    # -- mailing list ----------------------------------------------------------------

    async def _subscribe(self, request: web.Request) -> Outcome:
        if not _authorized(request, self.lists_token):
            return _unauthorized(), False, None
        member = await _json_object(request)
        if member is None:
            return _bad_request("body must be a JSON object"), False, None
        email = member.get("email")
        if not isinstance(email, str) or "@" not in email.strip("@"):
            return _bad_request("email is required"), False, None
        key = f"{request.match_info['list']}:{email.strip().casefold()}"
        created = self.lists.stats.record(key, member)
        body = {"list": request.match_info["list"], "email": email, "created": created}
        return web.json_response(body, status=201 if created else 200), True, key
