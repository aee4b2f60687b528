"""Geocoders the geocode task can use: the offline index, or any geopy provider.

Why this boundary: the task runner retries, rate-limits and breaks circuits on our own
exception types only, so geopy's exceptions are translated here into
:class:`~backchannel.errors.TemporaryTaskError` (worth retrying, with Retry-After) or
:class:`~backchannel.errors.PermanentTaskError`. Messages carry the provider name and the
HTTP status, never the URL, the response body or an API key.

The public Nominatim service (nominatim.openstreetmap.org) allows at most one request a
second from an identified application: using it requires a real ``user_agent`` and every
instance in the process shares one limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol, Self

from aiolimiter import AsyncLimiter
from geopy.adapters import AdapterHTTPError, AioHTTPAdapter, get_retry_after
from geopy.exc import (
    ConfigurationError,
    GeocoderAuthenticationFailure,
    GeocoderInsufficientPrivileges,
    GeocoderNotFound,
    GeocoderQueryError,
    GeocoderQuotaExceeded,
    GeocoderRateLimited,
    GeocoderServiceError,
    GeocoderTimedOut,
    GeocoderUnavailable,
)
from geopy.geocoders import Nominatim, get_geocoder_for_service

from backchannel.config import Secret
from backchannel.errors import ConfigError, PermanentTaskError, TemporaryTaskError
from workers.geocoding.offline import OfflineGeocoder, get_offline_geocoder
from workers.geocoding.result import GeoResult

log = logging.getLogger(__name__)

KEY = "services.geocode"
DEFAULT_USER_AGENT = "backchannel/0.1"
PUBLIC_NOMINATIM = "nominatim.openstreetmap.org"
KNOWN_PROVIDERS = ("offline", "nominatim", "photon", "pelias", "opencage", "googlev3",
                   "arcgis", "bing", "here", "mapbox", "tomtom")
# User agents that identify nobody: ours, geopy's, and the samples in geopy's docs.
_ANONYMOUS_AGENTS = {"", DEFAULT_USER_AGENT, "my-application", "my_app/1", "my_user_agent/1.0",
                     "specify_your_app_name_here"}
# Constructor arguments we set ourselves.
_OURS = {"user_agent", "timeout", "adapter_factory"}
_CITY_KEYS = ("city", "town", "village", "municipality", "hamlet")

_public_limiter: AsyncLimiter | None = None


def public_nominatim_limiter() -> AsyncLimiter:
    """The one limiter (1 request/s) every client of the public Nominatim shares."""
    global _public_limiter
    if _public_limiter is None:
        _public_limiter = AsyncLimiter(1, 1.0)
    return _public_limiter


class Geocoder(Protocol):
    """What the geocode task needs: geocode an address, and close when done."""

    name: str

    async def geocode(self, address: str) -> GeoResult | None: ...

    async def aclose(self) -> None: ...


class OfflineProvider:
    """The GeoNames index as a :class:`Geocoder`; builds it off the loop on first use."""

    name = "offline"

    def __init__(self, geocoder: OfflineGeocoder | None = None) -> None:
        self._geocoder = geocoder

    async def warm_up(self) -> None:
        """Build the index now (a second or two, off the loop) rather than on the first
        lookup, where it would eat into the task's timeout."""
        if self._geocoder is None:
            self._geocoder = await asyncio.to_thread(get_offline_geocoder)

    async def geocode(self, address: str) -> GeoResult | None:
        if self._geocoder is None:
            await self.warm_up()
        assert self._geocoder is not None
        return self._geocoder.lookup(address)

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


class GeopyProvider:
    """Any geopy geocoder, by its service name, over aiohttp.

    ``options`` are the geocoder's own constructor arguments (``domain``, ``scheme``,
    ``api_key``...); :class:`~backchannel.config.Secret` values are revealed here only.
    """

    def __init__(self, name: str, options: Mapping[str, Any], *, user_agent: str,
                 timeout: float) -> None:
        try:
            cls = get_geocoder_for_service(name)
        except GeocoderNotFound:
            raise ConfigError(
                f"unknown geocoding provider {name!r}; try one of {', '.join(KNOWN_PROVIDERS)}",
                key=f"{KEY}.provider",
            ) from None
        accepted = inspect.signature(cls.__init__).parameters
        kwargs: dict[str, Any] = {}
        for key, value in options.items():
            if key not in accepted or key in _OURS or key == "self":
                raise ConfigError(f"not a setting of geopy's {cls.__name__}", key=f"{KEY}.{key}")
            kwargs[key] = value.reveal() if isinstance(value, Secret) else value
        domain = str(kwargs.get("domain", getattr(accepted.get("domain"), "default", "")))
        self.public_nominatim = issubclass(cls, Nominatim) and domain.strip("/") == PUBLIC_NOMINATIM
        if self.public_nominatim and (
                user_agent.strip() in _ANONYMOUS_AGENTS or user_agent.startswith("geopy/")):
            raise ConfigError(
                f"the public Nominatim service requires a user agent that identifies this "
                f"deployment (e.g. 'acme-signups/1.0 ops@acme.example'), not {user_agent!r}",
                key=f"{KEY}.user_agent",
            )
        try:
            self._geocoder: Any = cls(**kwargs, user_agent=user_agent, timeout=timeout,
                                      adapter_factory=AioHTTPAdapter)
        except (ConfigurationError, TypeError, ValueError) as exc:
            raise ConfigError(f"geopy's {cls.__name__} refused its settings "
                              f"({type(exc).__name__})", key=KEY) from exc
        self.name = name.lower()
        self.limiter = public_nominatim_limiter() if self.public_nominatim else None
        self._query: dict[str, Any] = {"addressdetails": True} if issubclass(cls, Nominatim) else {}
        self._closed = False

    async def geocode(self, address: str) -> GeoResult | None:
        if self._closed:
            raise RuntimeError(f"the {self.name} geocoder is closed")
        query = address.strip()
        if not query:
            return None
        started = time.monotonic()
        with self._translate_errors():
            if self.limiter is not None:
                async with self.limiter:
                    location = await self._geocoder.geocode(query, exactly_one=True, **self._query)
            else:
                location = await self._geocoder.geocode(query, exactly_one=True, **self._query)
        log.info("geocode via %s: %s in %.0f ms", self.name,
                 "found" if location is not None else "no match",
                 (time.monotonic() - started) * 1000)
        if location is None:
            return None
        try:
            return self._result(location)
        except (TypeError, ValueError, AttributeError) as exc:
            raise PermanentTaskError(f"{self.name}: the answer is not a usable location") from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._geocoder.__aexit__(None, None, None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """geopy's errors -> ours. Only our own words reach the message: geopy's may hold
        the request URL (and with it an API key) or the response body."""
        try:
            yield
        except GeocoderServiceError as exc:
            cause = exc.__cause__
            status = f" (HTTP {cause.status_code})" if isinstance(cause, AdapterHTTPError) else ""
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is None and isinstance(cause, AdapterHTTPError):
                retry_after = get_retry_after(cause.headers)
            what = _describe(exc)
            message = f"{self.name}: {what}{status}"
            log.info("geocode via %s failed: %s%s", self.name, what, status)
            if isinstance(exc, GeocoderRateLimited) or not isinstance(exc, _PERMANENT):
                raise TemporaryTaskError(
                    message, retry_after=float(retry_after) if retry_after is not None else None
                ) from exc
            raise PermanentTaskError(message) from exc

    def _result(self, location: Any) -> GeoResult:
        raw = location.raw if isinstance(location.raw, Mapping) else {}
        details = raw.get("address") or raw.get("properties") or {}
        if not isinstance(details, Mapping):
            details = {}
        code = details.get("country_code") or details.get("countrycode")
        importance = raw.get("importance")
        confidence = (min(max(float(importance), 0.0), 1.0)
                      if isinstance(importance, int | float) else 0.7)
        return GeoResult(
            latitude=float(location.latitude),
            longitude=float(location.longitude),
            display_name=str(location.address or ""),
            city=_text(next((details[k] for k in _CITY_KEYS if details.get(k)), None)),
            region=_text(details.get("state")),
            country_code=_text(code.upper() if isinstance(code, str) else None),
            country=_text(details.get("country")),
            provider=self.name,
            confidence=confidence,
        )


_PERMANENT = (GeocoderQueryError, GeocoderAuthenticationFailure,
              GeocoderInsufficientPrivileges, GeocoderQuotaExceeded)


def _describe(exc: GeocoderServiceError) -> str:
    for kind, words in ((GeocoderRateLimited, "rate limited"), (GeocoderTimedOut, "timed out"),
                        (GeocoderUnavailable, "unavailable"),
                        (GeocoderQueryError, "refused the query"),
                        (GeocoderAuthenticationFailure, "authentication failed"),
                        (GeocoderInsufficientPrivileges, "not allowed"),
                        (GeocoderQuotaExceeded, "quota exceeded")):
        if isinstance(exc, kind):
            return words
    return "service error"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def build_geocoder(options: Mapping[str, Any], *, timeout: float) -> Geocoder:
    """The geocoder ``services.geocode`` asks for: ``provider`` (default "offline"),
    ``user_agent``, and the provider's own settings."""
    provider = options.get("provider", "offline")
    if not isinstance(provider, str) or not provider.strip():
        raise ConfigError(f"must be a provider name, one of {', '.join(KNOWN_PROVIDERS)}",
                          key=f"{KEY}.provider")
    if provider.strip().lower() == "offline":
        extra = sorted(set(options) - {"provider", "user_agent"})
        if extra:
            raise ConfigError("the offline geocoder takes no settings", key=f"{KEY}.{extra[0]}")
        return OfflineProvider()
    user_agent = options.get("user_agent", DEFAULT_USER_AGENT)
    if not isinstance(user_agent, str):
        raise ConfigError("must be a string", key=f"{KEY}.user_agent")
    rest = {k: v for k, v in options.items() if k not in ("provider", "user_agent")}
    return GeopyProvider(provider.strip().lower(), rest, user_agent=user_agent, timeout=timeout)
