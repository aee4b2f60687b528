"""The event contract (pubsub.envelope): round trips and one message per validation rule.

Round trips are property tests: whatever JSON a site sends (unicode, nesting, big numbers)
must come out of ``decode`` and out of a PubSub item, serialized to XML and parsed back,
exactly as it went in. Each rule is checked by the text a site developer would read.
"""

from __future__ import annotations

import json
import string
import time
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slixmpp.xmlstream import tostring as slix_tostring

from backchannel.errors import EventError, EventTooLarge, UnknownSource
from pubsub.envelope import (
    DEFAULT_MAX_BYTES,
    EXTENSION_RE,
    ID_RE,
    JSON_NS,
    KNOWN_ATTRS,
    MAX_DEPTH,
    TYPE_RE,
    Event,
    decode,
    from_element,
    make_event,
    new_id,
    parse_time,
    to_element,
    validate,
)

BIG = 10**40
# Everything XML 1.0 can carry; JSON escapes control characters itself, so those are in.
xml_text = st.text(st.characters(exclude_categories=["Cs"],
                                 exclude_characters="\ufffe\uffff"), max_size=30)
json_scalars = (st.none() | st.booleans() | st.integers(min_value=-BIG, max_value=BIG)
                | st.floats(allow_nan=False, allow_infinity=False) | xml_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(xml_text, inner, max_size=5),
    max_leaves=25,
)
event_types = st.from_regex(TYPE_RE, fullmatch=True).filter(lambda t: len(t) <= 128)
event_ids = st.from_regex(ID_RE, fullmatch=True)
sources = st.text(string.ascii_letters + string.digits + ":/.-_~é", min_size=1, max_size=80)
extensions = st.dictionaries(
    st.from_regex(EXTENSION_RE, fullmatch=True).filter(lambda k: k not in KNOWN_ATTRS),
    st.booleans() | st.integers(min_value=-BIG, max_value=BIG) | xml_text,
    max_size=3,
)
PROPS = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


def doc(**overrides: Any) -> dict[str, Any]:
    """A valid CloudEvent document, with some attributes replaced (None removes one)."""
    base: dict[str, Any] = {"specversion": "1.0", "id": "01JF3Q6W7Z0000000000000000",
                            "source": "https://shop.example.com", "type": "user.registered",
                            "time": "2026-12-04T15:00:00Z",
                            "datacontenttype": "application/json",
                            "data": {"user_id": "42", "email": "amy@example.com"}}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def rejects(raw: Any, **kwargs: Any) -> str:
    """The message ``decode`` (for text/bytes) or ``validate`` (for a dict) gives."""
    with pytest.raises(EventError) as info:
        if isinstance(raw, str | bytes):
            decode(raw, **kwargs)
        else:
            validate(raw, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------- round trips


@PROPS
@given(type_=event_types, source=sources, data=json_values,
       subject=st.none() | event_ids, ext=extensions)
def test_make_event_to_json_decode_round_trip(type_: str, source: str, data: Any,
                                              subject: str | None, ext: dict[str, Any]) -> None:
    event = make_event(type_, source, data, subject=subject, **ext)
    text = event.to_json()
    assert decode(text, max_bytes=10**7) == event
    assert decode(text.encode("utf-8"), max_bytes=10**7) == event
    assert json.loads(text)["id"] == event.id  # plain JSON any consumer can read


@PROPS
@given(event_id=event_ids, type_=event_types, source=sources, data=json_values,
       ext=extensions)
def test_item_payload_round_trip_through_xml(event_id: str, type_: str, source: str,
                                             data: Any, ext: dict[str, Any]) -> None:
    event = make_event(type_, source, data, id=event_id, **ext)
    element = to_element(event)
    assert element.tag == f"{{{JSON_NS}}}json"
    assert from_element(element, item_id=event_id, max_bytes=10**7) == event
    # What really travels: serialized by ElementTree and by slixmpp, parsed by expat.
    for wire in (ET.tostring(element, encoding="unicode"), slix_tostring(element)):
        parsed = ET.fromstring(wire)
        assert from_element(parsed, item_id=event_id, max_bytes=10**7) == event


def test_unicode_nested_and_large_numbers_survive() -> None:
    data = {"name": "Zoë 山田 🎉", "nested": {"list": [1, [2, [3, {"deep": None}]]]},
            "big": 2**200, "neg": -(10**38), "float": 1.5e300, "ctl": "tab\tnul\x00",
            "escaped_pair": "\U0001f600"}
    event = make_event("user.registered", "https://shop.example.com", data)
    assert decode(event.to_json()).data == data
    wire = ET.tostring(to_element(event))
    assert from_element(ET.fromstring(wire)).data == data


def test_make_event_maps_known_attributes_out_of_extensions() -> None:
    event = make_event("user.registered", "s", {}, dataschema="https://x.example/s.json",
                       tenant="acme")
    assert event.dataschema == "https://x.example/s.json"
    assert event.extensions == {"tenant": "acme"}
    assert decode(event.to_json()) == event


def test_make_event_refuses_what_json_or_xmpp_cannot_carry() -> None:
    with pytest.raises(EventError, match=r"NaN, Infinity or a number beyond 1\.8e308"):
        make_event("user.registered", "s", {"x": float("nan")})
    with pytest.raises(EventError, match="NaN, Infinity"):
        make_event("user.registered", "s", [1, [float("-inf")]])
    with pytest.raises(EventError, match="NaN, Infinity"):
        Event(id="a1", source="s", type="a.b", extensions={"x": float("inf")}).to_json()
    with pytest.raises(EventError, match="U\\+FFFF"):
        make_event("user.registered", "s", {"x": "a\uffffb"})
    with pytest.raises(EventError, match="U\\+D800"):
        make_event("user.registered", "s", {"x": "\ud800"})
    with pytest.raises(EventError, match="U\\+FFFE"):
        Event(id="a1", source="s", type="a.b", data={"\ufffe": 1}).to_json()


# ------------------------------------------------------------------------- validation


def test_a_valid_document_decodes() -> None:
    event = decode(json.dumps(doc(tenant="acme")))
    assert (event.id, event.type, event.extensions) == (
        "01JF3Q6W7Z0000000000000000", "user.registered", {"tenant": "acme"})


def test_size_limit_is_checked_first_and_counts_utf8_bytes() -> None:
    text = json.dumps(doc(data={"pad": "é" * 40_000}), ensure_ascii=False)
    assert len(text) < DEFAULT_MAX_BYTES < len(text.encode())
    with pytest.raises(EventTooLarge, match=r"event is \d+ bytes; the limit is 65536"):
        decode(text)
    with pytest.raises(EventTooLarge, match="the limit is 100"):
        decode(b"x" * 101, max_bytes=100)  # before it even tries to parse
    assert decode(text, max_bytes=len(text.encode())).data["pad"].startswith("é")


@pytest.mark.parametrize("key", ["specversion", "id", "source", "type"])
def test_each_required_attribute(key: str) -> None:
    assert rejects(doc(**{key: None})) == f"missing required attribute '{key}'"
    assert rejects(doc(**{key: 7})) == f"attribute '{key}' must be a string, got a number"


@pytest.mark.parametrize("bad", ["User.registered", "user", "user..x", "user.", ".user",
                                 "user registered", "user.registered\n", "a." + "b" * 130])
def test_type_pattern(bad: str) -> None:
    message = rejects(doc(type=bad))
    assert message.startswith("attribute 'type'")
    assert "must be dotted lower-case words, like 'user.registered'" in message


@pytest.mark.parametrize("bad", ["", "-x", "has space", "a/b", "x" * 129, "abc\n"])
def test_id_pattern(bad: str) -> None:
    assert rejects(doc(id=bad)).startswith("attribute 'id' must be 1-128 characters")


def test_specversion() -> None:
    assert rejects(doc(specversion="0.3")) == \
        "unsupported specversion '0.3' (expected '1.0')"


def test_source_length() -> None:
    assert "'source' must be a non-empty URI" in rejects(doc(source=""))
    assert "at most 512 characters" in rejects(doc(source="x" * 513))


@pytest.mark.parametrize("bad", ["yesterday", "2026-12-04", "2026-12-04T15:00:00",
                                 "2026-12-04T15:00Z", "20261204T150000Z",
                                 " 2026-12-04T15:00:00Z", "2026-12-04T15:00:00Z\n",
                                 "2026-02-30T15:00:00Z", "2026-12-04T24:00:00Z"])
def test_bad_time(bad: str) -> None:
    assert rejects(doc(time=bad)) == \
        f"attribute 'time' {bad[:40]!r} is not an RFC 3339 timestamp"


@pytest.mark.parametrize("good", ["2026-12-04T15:00:00Z", "2026-12-04t15:00:00.123z",
                                  "2026-12-04 15:00:00.123456789+05:30",
                                  "2026-12-04T15:00:00-08:00"])
def test_good_time(good: str) -> None:
    assert validate(doc(time=good)).time == good
    assert parse_time(good).tzinfo is not None


def test_optional_attributes_are_strings() -> None:
    for key in ("time", "subject", "datacontenttype", "dataschema"):
        assert rejects(doc(**{key: 1})) == f"attribute '{key}' must be a string, got a number"
    assert rejects(doc(datacontenttype="text/plain")) == \
        "attribute 'datacontenttype' must be 'application/json' when present"


def test_extensions() -> None:
    assert "extensions are 1-20 lower-case letters or digits" in rejects(doc(Tenant="a"))
    assert "attribute name 'data_base64' is not allowed" in rejects(doc(data_base64="eA=="))
    assert rejects(doc(tenant={"a": 1})) == \
        "extension attribute 'tenant' must be a string, number or boolean"
    assert rejects(doc(tenant=[1])) == \
        "extension attribute 'tenant' must be a string, number or boolean"


def test_unknown_source_via_known_sources() -> None:
    known = {"https://shop.example.com"}.__contains__
    assert validate(doc(), known).source == "https://shop.example.com"
    with pytest.raises(UnknownSource) as info:
        decode(json.dumps(doc(source="https://evil.example")), known_sources=known)
    assert str(info.value) == "source 'https://evil.example' is not a registered site"


def test_not_a_json_object() -> None:
    assert rejects([doc()]) == "event must be a JSON object, got an array"
    assert rejects('"hello"') == "event must be a JSON object, got a string"


@pytest.mark.parametrize("raw, expected", [
    ("{", "event is not well-formed JSON: Expecting property name enclosed in double quotes "
          "at line 1 column 2"),
    ("", "event is not well-formed JSON: Expecting value at line 1 column 1"),
    ('{"a": 1} x', "event is not well-formed JSON: Extra data at line 1 column 10"),
    ('{"data": NaN}', "event is not valid JSON: NaN is not a JSON value"),
    ('{"data": -Infinity}', "event is not valid JSON: -Infinity is not a JSON value"),
])
def test_not_json(raw: str, expected: str) -> None:
    assert rejects(raw) == expected


@pytest.mark.parametrize("number", ["1e400", "-1e400", "[1, {\"a\": 2e308}]"])
def test_numbers_that_overflow_to_infinity(number: str) -> None:
    # json.loads reads 1e400 as inf; passing it on would put "Infinity" on the node.
    expected = "event data holds NaN, Infinity or a number beyond 1.8e308, which JSON cannot carry"
    assert rejects(json.dumps(doc()).replace('"data": {', f'"data": {{"n": {number}, ')) \
        == expected
    assert rejects(json.dumps(doc(data=None))[:-1] + f', "data": {number}}}') == expected
    if not number.startswith("["):  # as an extension attribute too
        assert rejects(json.dumps(doc(data=None))[:-1] + f', "big": {number}}}') == expected


def test_integer_beyond_python_digit_limit_is_an_event_error() -> None:
    assert rejects('{"data": ' + "1" * 5000 + "}").startswith("event is not valid JSON:")


def test_not_utf8() -> None:
    raw = json.dumps(doc(data="caf\u00e9")).encode("latin-1")
    assert rejects(raw.replace(b"\\u00e9", b"\xe9")).startswith(
        "event is not UTF-8 (bad byte at offset")


@pytest.mark.parametrize("escaped", ["\\ud800", "\\uDFFF", "\\uffff", "\\uFFFE"])
def test_characters_xmpp_cannot_carry(escaped: str) -> None:
    raw = json.dumps(doc(data={"k": "x"})).replace('"x"', f'"a{escaped}"')
    assert "which XMPP cannot carry (not an XML character)" in rejects(raw)
    key = json.dumps(doc(data={"x": 1})).replace('"x"', f'"{escaped}"')
    assert "which XMPP cannot carry" in rejects(key)
    assert "which XMPP cannot carry" in rejects(json.dumps(doc()) + "\ud800")
    # A correctly escaped pair is one character, and fine.
    pair = json.dumps(doc(data={"k": "x"})).replace('"x"', '"\\ud83d\\ude00"')
    assert decode(pair).data == {"k": "\U0001f600"}


def test_deep_nesting() -> None:
    ok = json.dumps(doc(data=json.loads("[" * (MAX_DEPTH - 1) + "{}" + "]" * (MAX_DEPTH - 1))))
    assert decode(ok).data is not None
    deeper = "[" * MAX_DEPTH + "{}" + "]" * MAX_DEPTH
    expected = f"event JSON is nested more than {MAX_DEPTH} levels deep"
    assert rejects(json.dumps(doc()).replace('"data": {', '"data": {"n": ' + deeper + ", ")) \
        == expected
    # Past the interpreter's recursion limit: the same message, no RecursionError.
    assert rejects("[" * 100_000 + "]" * 100_000, max_bytes=10**6) == expected


def test_item_payload_checks() -> None:
    with pytest.raises(EventError, match="item has no payload"):
        from_element(None)
    with pytest.raises(EventError, match="item payload is <entry>, expected <json"):
        from_element(ET.Element("{http://www.w3.org/2005/Atom}entry"))
    event = make_event("user.registered", "s", {})
    with pytest.raises(EventError, match="item id 'other' differs from event id"):
        from_element(to_element(event), item_id="other")
    empty = ET.Element(f"{{{JSON_NS}}}json")
    with pytest.raises(EventError, match="not well-formed JSON"):
        from_element(empty)


# ------------------------------------------------------------------------- ids


CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def ulid_ms(ulid: str) -> int:
    """The timestamp in the first 10 characters (48 bits of milliseconds)."""
    value = 0
    for char in ulid[:10]:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    return value


@given(st.floats(min_value=0, max_value=2**47 / 1000))
def test_new_id_shape(now: float) -> None:
    ulid = new_id(now)
    assert len(ulid) == 26 and set(ulid) <= CROCKFORD and ID_RE.match(ulid)
    assert ulid_ms(ulid) == int(now * 1000)


@given(st.floats(min_value=0, max_value=2**47 / 1000), st.floats(min_value=0.001, max_value=1e6))
def test_new_ids_sort_by_time(earlier: float, later_by: float) -> None:
    later = earlier + later_by
    if int(later * 1000) > int(earlier * 1000):
        assert new_id(earlier) < new_id(later)


def test_new_ids_are_unique_and_current() -> None:
    before = int(time.time() * 1000)
    ids = [new_id() for _ in range(20_000)]
    after = int(time.time() * 1000)
    assert len(set(ids)) == len(ids)
    assert all(before <= ulid_ms(i) <= after for i in ids[:: 997])
    assert ids[0][:10] <= ids[-1][:10]
