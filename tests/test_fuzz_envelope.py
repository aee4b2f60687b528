"""Fuzzing the event contract (pubsub.envelope): any bytes, any text, any item payload.

Property: ``decode`` and ``from_element`` either return an event or raise an
:class:`~backchannel.errors.EventError` (or its subclasses) with a short, specific message
that leaks nothing. What they accept is really valid: it serializes, survives a trip
through XML and decodes to the same event.
"""

from __future__ import annotations

import json
import string
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel.errors import EventError, EventTooLarge, UnknownSource
from pubsub.envelope import JSON_NS, KNOWN_ATTRS, decode, from_element, to_element
from tests.fuzz_support import MAX_MESSAGE, FuzzRun, fuzz_run, leaks

pytestmark = pytest.mark.fuzz

SHOP = "https://shop.example.com"
ERRORS = (EventError, EventTooLarge, UnknownSource)

# Every code point, surrogates and non-characters included: a str can hold them.
any_char = st.characters(codec=None, exclude_categories=())
any_text = st.text(any_char, max_size=80)
long_text = st.builds(lambda part, n: part * n, st.text(any_char, min_size=1, max_size=3),
                      st.sampled_from([150, 1000, 5000]))
json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
                | st.floats() | any_text | long_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)
attribute_names = st.sampled_from(sorted(KNOWN_ATTRS)) | st.from_regex(
    r"\A[a-z0-9]{1,22}\Z") | any_text
RFC3339ISH = st.from_regex(
    r"\A\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,12})?([Zz]|[+-]\d{2}:\d{2})?\Z")


def base_doc() -> dict[str, Any]:
    return {"specversion": "1.0", "id": "01JF3Q6W7Z0000000000000000", "source": SHOP,
            "type": "user.registered", "time": "2026-12-04T15:00:00Z",
            "datacontenttype": "application/json",
            "data": {"user_id": "42", "name": "Amy", "address": "Toluca Lake, CA"}}


@st.composite
def mutated_documents(draw: st.DrawFn) -> str:
    """A valid event with attributes replaced, removed or added, as (maybe broken) JSON."""
    doc = base_doc()
    for _ in range(draw(st.integers(0, 4))):
        key = draw(attribute_names)
        action = draw(st.integers(0, 3))
        if action == 0:
            doc.pop(key, None)
        elif action == 1 and key == "time":
            doc[key] = draw(RFC3339ISH)
        elif action in (1, 2):
            doc[key] = draw(any_text | long_text)
        else:
            doc[key] = draw(json_values)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), allow_nan=True)
    splice = draw(st.integers(0, 3))
    if splice == 1:  # cut short
        text = text[: draw(st.integers(0, len(text)))]
    elif splice == 2:  # junk inserted somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(any_text) + text[at:]
    return text


@st.composite
def hostile_json(draw: st.DrawFn) -> str:
    """Nesting, numbers and escapes that trip JSON parsers and their callers."""
    depth = draw(st.integers(1, 3000))
    opener = draw(st.sampled_from(["[", '{"a":', '{"data":[']))
    closer = {"[": "]", '{"a":': "}", '{"data":[': "]}"}[opener]
    number = draw(st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "1" * 5000, "-0",
                                   "1E-400", "0.1e1", "9" * 4300, '"\\ud800"', '"\\udfff x"',
                                   '"\\uffff"', '"\\u0000"', "tru", "nul"]))
    doc = json.dumps(base_doc())
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return opener * depth + number + closer * depth
    if choice == 1:
        return doc.replace('"42"', number)
    return doc[:-1] + f', "{draw(st.from_regex(r"[a-z]{1,5}", fullmatch=True))}": {number}}}'


raw_inputs = (st.binary(max_size=300) | st.text(any_char, max_size=300) | mutated_documents()
              | hostile_json() | mutated_documents().map(lambda t: t.encode("utf-8", "replace")))
known = st.sampled_from([None, {SHOP}.__contains__, lambda s: False])
limits = st.sampled_from([65536, 65536, 200, 1]) | st.integers(0, 10**6)


def judge(run: FuzzRun, what: object, call: Any) -> None:
    """Run ``call``; an EventError must be clean, an event must really be valid."""
    with run.case(what):
        try:
            event = call()
        except ERRORS as exc:
            message = str(exc)
            assert message, f"{type(exc).__name__} without a message"
            assert len(message) <= MAX_MESSAGE, f"message of {len(message)} characters"
            assert leaks(message) is None, message
            return
        text = event.to_json()
        assert decode(text, max_bytes=10**7) == event
        wire = ET.tostring(to_element(event), encoding="unicode")
        assert from_element(ET.fromstring(wire), item_id=event.id, max_bytes=10**7) == event


def test_fuzz_envelope(long_mode: bool, server_kind: str) -> None:
    with fuzz_run("envelope", long_mode=long_mode, server_kind=server_kind,
                  ci_cases=1000) as run:

        @run.hypothesis(0.75)
        @given(raw=raw_inputs, max_bytes=limits, known_sources=known)
        def decoding(raw: str | bytes, max_bytes: int, known_sources: Any) -> None:
            judge(run, raw, lambda: decode(raw, max_bytes=max_bytes,
                                           known_sources=known_sources))

        tags = st.sampled_from([f"{{{JSON_NS}}}json", "json", "{urn:xmpp:json:1}json",
                                "{http://www.w3.org/2005/Atom}entry"])
        texts = st.none() | mutated_documents() | st.text(string.printable, max_size=50)

        @run.hypothesis(0.25)
        @given(tag=tags, text=texts, item_id=st.none() | st.just("01JF3Q6W7Z0000000000000000")
               | any_text, empty=st.booleans())
        def payloads(tag: str, text: str | None, item_id: str | None, empty: bool) -> None:
            element = None if empty and text is None else ET.Element(tag)
            if element is not None:
                element.text = text
            judge(run, (tag, text, item_id),
                  lambda: from_element(element, item_id=item_id))

        decoding()
        payloads()


def test_what_fuzzing_found_a_long_specversion_is_not_echoed_whole() -> None:
    doc = base_doc() | {"specversion": "9" * 60_000}
    with pytest.raises(EventError) as info:
        decode(json.dumps(doc))
    assert str(info.value) == f"unsupported specversion {'9' * 40!r} (expected '1.0')"
