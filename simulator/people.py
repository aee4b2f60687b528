"""Realistic fake users and the event data fake sites publish about them.

Why: the demo and the benchmarks should look like a real, international sign-up stream
(accented names, towns weighted by how many people live there), and every address must
be one the geocoders can resolve, so a failure in a test means something. Addresses are
real GeoNames cities (cities15000) drawn by population, written the way people type
them: "Austin, TX, United States", "Toronto, ON, Canada", "Lyon, France".

Everything is drawn from the :class:`random.Random` passed in: the same seed gives the
same users. E-mail addresses use the reserved ``example.*`` domains, never real ones.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
from typing import Any

from simulator.gazetteer import City, fold, gazetteer

log = logging.getLogger(__name__)

FIRST_NAMES = (
    "Amy", "Liam", "Olivia", "Noah", "Emma", "Mateo", "Sofía", "Lucía", "José", "Zoë",
    "Chloé", "Renée", "Hélène", "François", "Jérôme", "Zoé", "Léa", "Björn", "Åsa",
    "Søren", "Jürgen", "Jörg", "Müge", "Çağan", "Ayşe", "Ömer", "Łukasz", "Małgorzata",
    "Zuzana", "Tomáš", "Dóra", "Ágnes", "Ioana", "Andrés", "Inês", "João", "Gonçalo",
    "Raúl", "Ximena", "Priya", "Arjun", "Aiko", "Haruto", "Min-jun", "Seo-yeon", "Wei",
    "Mei", "Thanh", "Kwame", "Amara", "Chidi", "Fatima", "Youssef", "Leila", "Omar",
    "Nia", "Kofi", "Siobhán", "Niamh", "Seán", "Mikko", "Aino", "Eero", "Dmitri", "Anya",
    "Oksana", "Nikos", "Eleni", "Tariq", "Ana", "Marco", "Giulia", "Luca", "Chiara",
)
LAST_NAMES = (
    "Smith", "Johnson", "García", "Martínez", "Hernández", "López", "González", "Pérez",
    "Müller", "Schröder", "Weiß", "Groß", "Dubois", "Lefèvre", "Girard", "Moreau",
    "Rossi", "Bianchi", "Esposito", "Silva", "Gonçalves", "Conceição", "Nowak",
    "Wiśniewski", "Dvořák", "Novák", "Horváth", "Kovács", "Nagy", "Popescu", "Jensen",
    "Nielsen", "Ångström", "Lindqvist", "Virtanen", "Häkkinen", "Yılmaz", "Öztürk",  # noqa: RUF001
    "Şahin", "Ivanov", "Kowalczyk", "O'Brien", "Ó Súilleabháin", "MacLeod", "Nguyễn",
    "Trần", "Kim", "Park", "Tanaka", "Suzuki", "Satō", "Wang", "Li", "Chen", "Patel",
    "Singh", "Sharma", "Okafor", "Mensah", "Diallo", "Haddad", "Al-Sayed", "Cohen",
    "Levi", "Papadopoulos", "Nakamura", "Santos", "Oliveira", "Fernández", "Brown",
)
MAIL_DOMAINS = ("example.com", "example.org", "example.net")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/126.0 Mobile",
)
# Documentation address blocks (RFC 5737): realistic-looking, routed nowhere.
_TEST_NETS = ("192.0.2", "198.51.100", "203.0.113")
EVENT_KINDS = ("user.registered", "user.profile_changed", "user.logged_in")


@functools.cache
def _weighted_cities() -> tuple[tuple[City, ...], tuple[int, ...]]:
    cities = gazetteer().cities
    return cities, tuple(itertools.accumulate(c.population for c in cities))


def random_city(rng: random.Random) -> City:
    """A real city, chosen with probability proportional to its population."""
    cities, cum_weights = _weighted_cities()
    return rng.choices(cities, cum_weights=cum_weights, k=1)[0]


def _email_part(name: str) -> str:
    return "".join(ch for ch in fold(name) if ch.isalnum())


def fake_user(rng: random.Random) -> dict[str, Any]:
    """A user as a site would publish it: user_id, name, email, address."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    user_id = str(rng.randrange(1, 10**9))
    local = f"{_email_part(first)}.{_email_part(last)}"
    if rng.random() < 0.5:
        local += str(rng.randrange(1, 1000))
    return {
        "user_id": user_id,
        "name": f"{first} {last}",
        "email": f"{local}@{rng.choice(MAIL_DOMAINS)}",
        "address": random_city(rng).address,
    }


def fake_event_data(
    kind: str, rng: random.Random, user: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``data`` of an event of ``kind`` (one of :data:`EVENT_KINDS`).

    ``user`` (from :func:`fake_user`) makes the event about a known user; otherwise a
    new one is drawn. A profile change moves the user or renames them and lists what
    changed in ``changed``; a login carries an IP from a documentation range.
    """
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r} (known: {', '.join(EVENT_KINDS)})")
    who = dict(user) if user is not None else fake_user(rng)
    if kind == "user.registered":
        return who
    if kind == "user.profile_changed":
        if rng.random() < 0.7:
            who["address"] = random_city(rng).address
            changed = ["address"]
        else:
            who["name"] = f"{who['name'].split(' ')[0]} {rng.choice(LAST_NAMES)}"
            changed = ["name"]
        return {**who, "changed": changed}
    return {
        "user_id": who["user_id"],
        "ip": f"{rng.choice(_TEST_NETS)}.{rng.randrange(1, 255)}",
        "user_agent": rng.choice(USER_AGENTS),
    }
