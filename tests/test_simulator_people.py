"""Fake users look international, live in real places, and are repeatable by seed."""

from __future__ import annotations

import random
import statistics

import pytest

from simulator.gazetteer import fold, gazetteer
from simulator.people import EVENT_KINDS, fake_event_data, fake_user, random_city


def test_fold_drops_case_accents_and_punctuation() -> None:
    assert fold("Saint-Étienne") == "saint etienne"
    assert fold("  SÃO   Paulo ") == "sao paulo"
    assert fold("St. John's") == "st john s"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Springfield, MO", "Springfield, Missouri, United States"),
        ("Springfield, Missouri, USA", "Springfield, Missouri, United States"),
        ("Perth, WA", "Perth, Western Australia, Australia"),
        ("Perth, Scotland", "Perth, Scotland, United Kingdom"),
        ("10 Downing Street, London, UK", "London, England, United Kingdom"),
        ("Cologne", "Köln, Germany"),
        ("sao paulo, brazil", "São Paulo, Brazil"),
        ("New York USA", "New York City, New York, United States"),
        ("Montreal, QC", "Montréal, Quebec, Canada"),
    ],
)
def test_gazetteer_resolves_the_way_people_write(query: str, expected: str) -> None:
    found = gazetteer().search(query)
    assert found and found[0].display_name == expected


@pytest.mark.parametrize("query", ["Narnia", "Springfield, Narnia", "", " , ", "Toluca Lake, CA"])
def test_gazetteer_returns_nothing_for_unknown_places(query: str) -> None:
    assert gazetteer().search(query) == []


def test_every_generated_address_resolves_to_its_city() -> None:
    rng = random.Random(2024)
    gaz = gazetteer()
    misses, not_first = [], 0
    for _ in range(400):
        city = random_city(rng)
        found = gaz.search(city.address)
        if city not in found:
            misses.append(city.address)
        elif found[0] != city:
            not_first += 1  # a same-named, bigger town in the same region
    assert misses == []
    assert not_first <= 8


def test_addresses_carry_a_region_only_in_us_ca_au() -> None:
    rng = random.Random(5)
    seen = set()
    for _ in range(1500):
        city = random_city(rng)
        parts = city.address.split(", ")
        if city.country_code in ("US", "CA", "AU"):
            assert len(parts) == 3 and parts[1] == city.region_code and parts[1].isupper()
        else:
            assert len(parts) == 2, city.address
        seen.add(city.country_code)
    assert {"US", "CA"} <= seen and len(seen) > 40


def test_cities_are_weighted_by_population() -> None:
    rng = random.Random(11)
    drawn = [random_city(rng).population for _ in range(2000)]
    everyone = statistics.median(c.population for c in gazetteer().cities)
    assert statistics.median(drawn) > 5 * everyone


def test_users_are_repeatable_by_seed_and_look_real() -> None:
    first = [fake_user(random.Random(99)) for _ in range(2)]
    assert first[0] == first[1]
    rng = random.Random(1)
    users = [fake_user(rng) for _ in range(300)]
    assert users != [fake_user(random.Random(2)) for _ in range(300)]
    assert len({u["user_id"] for u in users}) == 300
    assert any(not u["name"].isascii() for u in users)  # accents and other letters
    for user in users:
        assert set(user) == {"user_id", "name", "email", "address"}
        local, domain = user["email"].split("@")
        assert local.isascii() and local and domain in ("example.com", "example.org",
                                                        "example.net")
        assert gazetteer().search(user["address"]), user["address"]


def test_event_data_per_kind() -> None:
    rng = random.Random(3)
    user = fake_user(rng)
    assert fake_event_data("user.registered", rng, user) == user
    changed = fake_event_data("user.profile_changed", rng, user)
    assert changed["user_id"] == user["user_id"] and changed["changed"] in (["address"], ["name"])
    field = changed["changed"][0]
    assert changed[field] != user[field] or field == "address"  # may move to the same town
    login = fake_event_data("user.logged_in", rng, user)
    assert login["user_id"] == user["user_id"]
    assert login["ip"].startswith(("192.0.2.", "198.51.100.", "203.0.113."))
    for kind in EVENT_KINDS:
        assert fake_event_data(kind, random.Random(8)) == fake_event_data(kind, random.Random(8))
    with pytest.raises(ValueError, match=r"user\.deleted"):
        fake_event_data("user.deleted", rng)
