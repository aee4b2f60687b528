"""What a geocoder found, in one shape whatever answered.

Why a frozen dataclass with its own JSON codec: results are cached in the worker's SQLite
store and carried in result events, so they must round-trip through JSON unchanged, and
a cached row must be checked when it is read back rather than trusted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_OPTIONAL_TEXT = ("city", "region", "country_code", "country")


@dataclass(frozen=True)
class GeoResult:
    """A resolved place: a point, a human-readable name and what is known around it.

    ``confidence`` is in [0, 1]: near 1 for a city confirmed by its region or country,
    lower for an ambiguous name, lowest for a country seen only as a whole.
    """

    latitude: float
    longitude: float
    display_name: str
    city: str | None
    region: str | None
    country_code: str | None
    country: str | None
    provider: str
    confidence: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latitude) and -90.0 <= self.latitude <= 90.0):
            raise ValueError(f"latitude out of range: {self.latitude!r}")
        if not (math.isfinite(self.longitude) and -180.0 <= self.longitude <= 180.0):
            raise ValueError(f"longitude out of range: {self.longitude!r}")
        if not (math.isfinite(self.confidence) and 0.0 <= self.confidence <= 1.0):
            raise ValueError(f"confidence out of range: {self.confidence!r}")
        if not self.provider:
            raise ValueError("provider must not be empty")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (str, float and None values only)."""
        return {
            "latitude": self.latitude,
            "longitude": self.longitude,
            "display_name": self.display_name,
            "city": self.city,
            "region": self.region,
            "country_code": self.country_code,
            "country": self.country,
            "provider": self.provider,
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GeoResult:
        """Rebuild a result from :meth:`to_dict` output; raise ValueError if it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError("a GeoResult must be a JSON object")
        try:
            numbers = {k: data[k] for k in ("latitude", "longitude", "confidence")}
            texts = {k: data[k] for k in ("display_name", "provider")}
            optional = {k: data.get(k) for k in _OPTIONAL_TEXT}
        except KeyError as exc:
            raise ValueError(f"GeoResult is missing {exc.args[0]!r}") from None
        for key, value in numbers.items():
            # bool is an int: refuse it explicitly, JSON true is not a coordinate.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"GeoResult.{key} must be a number")
        for key, value in texts.items():
            if not isinstance(value, str):
                raise ValueError(f"GeoResult.{key} must be a string")
        for key, value in optional.items():
            if value is not None and not isinstance(value, str):
                raise ValueError(f"GeoResult.{key} must be a string or null")
        return cls(
            latitude=float(numbers["latitude"]),
            longitude=float(numbers["longitude"]),
            display_name=texts["display_name"],
            city=optional["city"],
            region=optional["region"],
            country_code=optional["country_code"],
            country=optional["country"],
            provider=texts["provider"],
            confidence=float(numbers["confidence"]),
        )
