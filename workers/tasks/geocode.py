"""The ``geocode`` task: the event's ``data.address`` -> a point and a place name.

The provider comes from ``services.geocode.provider`` (``offline`` by default: GeoNames
data shipped in a package; ``nominatim`` or any geopy geocoder by name). Results are
cached in the store by normalized address for ``cache_ttl`` seconds (default 30 days), so
a popular city costs one call, and a rate-limited provider is spared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backchannel.config import ServiceSettings
from backchannel.errors import ConfigError, PermanentTaskError
from pubsub.envelope import Event
from workers.geocoding.places import normalize_address
from workers.geocoding.providers import Geocoder, build_geocoder
from workers.tasks.base import TaskEnv

MAX_ADDRESS = 500


class GeocodeTask:
    def __init__(self, name: str, geocoder: Geocoder, env: TaskEnv, provider: str,
                 ttl: float) -> None:
        self.name = name
        self.service = name
        self.geocoder = geocoder
        self.env = env
        self.provider = provider
        self.ttl = ttl

    @classmethod
    def build(cls, name: str, settings: ServiceSettings, env: TaskEnv) -> GeocodeTask:
        options = dict(settings.options)
        options.pop("plugin", None)
        ttl = options.pop("cache_ttl", 30 * 86400)
        if not isinstance(ttl, int | float) or ttl < 0:
            raise ConfigError("must be a number of seconds", file=env.settings.source_file,
                              key=f"services.{name}.cache_ttl")
        provider = str(options.get("provider", "offline"))
        return cls(name, build_geocoder(options, timeout=settings.timeout), env, provider,
                   float(ttl))

    async def run(self, event: Event) -> Mapping[str, Any]:
        data = event.data if isinstance(event.data, dict) else {}
        address = data.get("address")
        if address is None or address == "":
            return {"skipped": "no address in the event"}
        if not isinstance(address, str):
            raise PermanentTaskError("data.address must be a string")
        if len(address) > MAX_ADDRESS:
            raise PermanentTaskError(f"data.address is longer than {MAX_ADDRESS} characters")
        key = f"geocode:{self.provider}:{normalize_address(address)}"
        cached = self.env.store.cache_get(key)
        if cached is not None:
            return {**cached, "cached": True}
        found = await self.geocoder.geocode(address)
        result: dict[str, Any] = found.to_dict() if found else {"found": False}
        if found:
            result["found"] = True
        self.env.store.cache_put(key, result, self.ttl)
        return {**result, "cached": False}

    async def warm_up(self) -> None:
        warm_up = getattr(self.geocoder, "warm_up", None)
        if warm_up is not None:
            await warm_up()

    async def aclose(self) -> None:
        await self.geocoder.aclose()
