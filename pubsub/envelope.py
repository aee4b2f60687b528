"""The event contract: CloudEvents 1.0 JSON inside an XEP-0335 JSON container.

Every item on every backchannel node is one of these, so every consumer parses one
format. Validation is strict and early and each rule has its own message, because the
message is what a site developer sees in a 422 or a dead letter::

    <item id="01JF3Q6W7Z...">
      <json xmlns="urn:xmpp:json:0">{"specversion": "1.0", "id": "01JF3Q6W7Z...", ...}</json>
    </item>

The item id is the event id; results, feed items and dead letters carry the original
event id in ``subject``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from backchannel.errors import EventError, EventTooLarge, UnknownSource

JSON_NS = "urn:xmpp:json:0"
SPECVERSION = "1.0"
DEFAULT_MAX_BYTES = 65536

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")  # \Z: "$" allows a final "\n"
TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+\Z")
REQUIRED = ("specversion", "id", "source", "type")
KNOWN_ATTRS = frozenset(
    {"specversion", "id", "source", "type", "time", "subject", "datacontenttype",
     "dataschema", "data"}
)
EXTENSION_RE = re.compile(r"^[a-z0-9]{1,20}\Z")
MAX_DEPTH = 64  # nesting of ``data``; deterministic, unlike the interpreter's recursion limit
# RFC 3339 date-time (with seconds and an offset); Python's fromisoformat alone accepts more.
TIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z"
)
# Code points XMPP cannot carry: not XML 1.0 characters (lone surrogates, U+FFFE, U+FFFF).
# JSON escapes control characters itself, so these are the only ones that could slip through.
NOT_XML_RE = re.compile("[\ud800-\udfff\ufffe\uffff]")
# The same code points as JSON escapes in a raw document: a cheap pre-check before a walk.
_ESCAPED_NOT_XML = re.compile(r"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|[fF]{3}[eEfF])")

# json.loads reads 1e400 as inf, which json.dumps would write as "Infinity": not JSON.
NOT_FINITE = "event data holds NaN, Infinity or a number beyond 1.8e308, which JSON cannot carry"

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(now: float | None = None) -> str:
    """A ULID: 26 characters, sortable by creation time, unique without coordination."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value: str) -> datetime:
    """RFC 3339 timestamp -> aware datetime (raises ValueError)."""
    if not TIME_RE.match(value):
        raise ValueError("not an RFC 3339 date-time")
    text = value
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return parsed


@dataclass(frozen=True)
class Event:
    """One CloudEvent. ``data`` is any JSON value; ``extensions`` keeps unknown attributes."""

    id: str
    source: str
    type: str
    data: Any = None
    time: str | None = None
    subject: str | None = None
    datacontenttype: str | None = "application/json"
    dataschema: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"specversion": SPECVERSION, "id": self.id, "source": self.source,
                               "type": self.type}
        for key in ("time", "subject", "datacontenttype", "dataschema"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out.update(self.extensions)
        if self.data is not None:
            out["data"] = self.data
        return out

    def to_json(self) -> str:
        """Compact JSON, UTF-8 friendly; refuses what JSON or XMPP cannot carry."""
        try:
            text = json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False)
        except ValueError:  # NaN or Infinity: Python writes them, no other JSON parser reads them
            raise EventError(NOT_FINITE) from None
        except RecursionError:
            raise EventError("event data is nested too deeply") from None
        bad = NOT_XML_RE.search(text)
        if bad is not None:
            raise EventError(_not_xml_message(bad.group()))
        return text


def make_event(
    type: str,
    source: str,
    data: Any = None,
    *,
    subject: str | None = None,
    id: str | None = None,
    **extensions: Any,
) -> Event:
    """Build a new valid event with a fresh id and the current time."""
    event = Event(
        id=id or new_id(), source=source, type=type, data=data, time=utc_now(),
        subject=subject, extensions=extensions,
    )
    # The validated copy is canonical: ``make_event(..., dataschema=...)`` lands in
    # ``dataschema``, not in ``extensions``, so it equals what a consumer decodes.
    checked = validate(event.to_dict())
    checked.to_json()  # NaN, unencodable characters: fail here, not at publish time
    return checked


def validate(doc: Any, known_sources: Callable[[str], bool] | None = None) -> Event:
    """Check a decoded JSON document against the contract and return the :class:`Event`."""
    if not isinstance(doc, dict):
        raise EventError(f"event must be a JSON object, got {_json_kind(doc)}")
    for key in REQUIRED:
        if key not in doc:
            raise EventError(f"missing required attribute '{key}'")
        if not isinstance(doc[key], str):
            raise EventError(f"attribute '{key}' must be a string, got {_json_kind(doc[key])}")
    if doc["specversion"] != SPECVERSION:
        raise EventError(f"unsupported specversion {doc['specversion'][:40]!r} (expected '1.0')")
    if not ID_RE.match(doc["id"]):
        raise EventError(
            "attribute 'id' must be 1-128 characters of letters, digits and . _ : - "
            "starting with a letter or digit"
        )
    if not doc["source"] or len(doc["source"]) > 512:
        raise EventError("attribute 'source' must be a non-empty URI of at most 512 characters")
    if len(doc["type"]) > 128 or not TYPE_RE.match(doc["type"]):
        raise EventError(
            f"attribute 'type' {doc['type'][:60]!r} must be dotted lower-case words, "
            "like 'user.registered'"
        )
    for key in ("time", "subject", "datacontenttype", "dataschema"):
        if key in doc and not isinstance(doc[key], str):
            raise EventError(f"attribute '{key}' must be a string, got {_json_kind(doc[key])}")
    if "time" in doc:
        try:
            parse_time(doc["time"])
        except ValueError:
            raise EventError(
                f"attribute 'time' {doc['time'][:40]!r} is not an RFC 3339 timestamp"
            ) from None
    if "datacontenttype" in doc and doc["datacontenttype"] != "application/json":
        raise EventError("attribute 'datacontenttype' must be 'application/json' when present")
    extensions: dict[str, Any] = {}
    for key, value in doc.items():
        if key in KNOWN_ATTRS:
            continue
        if not EXTENSION_RE.match(key):
            raise EventError(
                f"attribute name {key[:40]!r} is not allowed "
                "(extensions are 1-20 lower-case letters or digits)"
            )
        if isinstance(value, dict | list):
            raise EventError(f"extension attribute '{key}' must be a string, number or boolean")
        if isinstance(value, float) and not math.isfinite(value):
            raise EventError(NOT_FINITE)
        extensions[key] = value
    _check_data(doc.get("data"))
    if known_sources is not None and not known_sources(doc["source"]):
        raise UnknownSource(f"source {doc['source'][:80]!r} is not a registered site")
    return Event(
        id=doc["id"], source=doc["source"], type=doc["type"], data=doc.get("data"),
        time=doc.get("time"), subject=doc.get("subject"),
        datacontenttype=doc.get("datacontenttype"), dataschema=doc.get("dataschema"),
        extensions=extensions,
    )


def decode(
    raw: str | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    known_sources: Callable[[str], bool] | None = None,
) -> Event:
    """Parse and validate a serialized event (size first, then JSON, then the contract)."""
    if isinstance(raw, str):
        try:
            size = len(raw.encode("utf-8"))
        except UnicodeEncodeError as exc:  # a lone surrogate
            raise EventError(_not_xml_message(raw[exc.start])) from None
    else:
        size = len(raw)
    if size > max_bytes:
        raise EventTooLarge(f"event is {size} bytes; the limit is {max_bytes}")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError(f"event is not UTF-8 (bad byte at offset {exc.start})") from None
    try:
        doc = json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise EventError(
            f"event is not well-formed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise EventError(f"event JSON is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # NaN/Infinity, or an integer beyond Python's digit limit
        raise EventError(f"event is not valid JSON: {str(exc)[:120]}") from None
    bad = NOT_XML_RE.search(raw)
    if bad is not None:
        raise EventError(_not_xml_message(bad.group()))
    if _ESCAPED_NOT_XML.search(raw):
        _check_strings(doc)
    return validate(doc, known_sources)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _not_xml_message(char: str) -> str:
    return (f"event contains U+{ord(char):04X}, which XMPP cannot carry "
            "(not an XML character)")


def _check_strings(doc: Any) -> None:
    """Refuse decoded strings (keys too) that hold code points XML cannot carry."""
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            bad = NOT_XML_RE.search(value)
            if bad is not None:
                raise EventError(_not_xml_message(bad.group()))
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _check_data(data: Any) -> None:
    """Refuse ``data`` nested deeper than :data:`MAX_DEPTH` or holding a non-finite number
    (iterative, so no RecursionError whatever the input)."""
    if isinstance(data, float):
        if not math.isfinite(data):
            raise EventError(NOT_FINITE)
        return
    if not isinstance(data, dict | list):
        return
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise EventError(f"event JSON is nested more than {MAX_DEPTH} levels deep")
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif isinstance(child, float) and not math.isfinite(child):
                raise EventError(NOT_FINITE)


def to_element(event: Event) -> ET.Element:
    """The XEP-0335 payload element for a PubSub item."""
    element = ET.Element(f"{{{JSON_NS}}}json")
    element.text = event.to_json()
    return element


def from_element(
    element: ET.Element | None,
    *,
    item_id: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    known_sources: Callable[[str], bool] | None = None,
) -> Event:
    """Read an event from an item payload; the item id must match the event id."""
    if element is None:
        raise EventError("item has no payload")
    if element.tag != f"{{{JSON_NS}}}json":
        raise EventError(
            f"item payload is <{_local(element.tag)}>, expected <json xmlns='{JSON_NS}'>"
        )
    event = decode(element.text or "", max_bytes=max_bytes, known_sources=known_sources)
    if item_id is not None and item_id != event.id:
        raise EventError(f"item id {item_id[:60]!r} differs from event id {event.id!r}")
    return event


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
