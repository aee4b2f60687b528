"""Incoming stanzas to our handlers, with one slixmpp handler per connection.

Why not one slixmpp ``Callback(MatchXPath(...))`` per handler: slixmpp tries every
registered handler's matcher on every incoming stanza, and ``MatchXPath`` wraps the
stanza in a new element and runs an ElementPath query each time. A bot has five such
handlers besides slixmpp's own ~18, so each chat message paid for ~25 matchers; the
profile of the ``status`` round trip showed handler matching as the largest cost after
the socket calls. Here the routes are indexed by the stanza's root tag and matched by
walking direct children, and slixmpp sees a single handler.

Paths have the form slixmpp's ``MatchXPath`` accepts for our uses: the root tag, then
child tags, each in Clark notation (``{jabber:client}message/{ns}event/{ns}items``). A
stanza matches when some chain of children has those tags, as with ``Element.find``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase

log = logging.getLogger(__name__)

MessageHandler = Callable[[ET.Element], None]
HANDLER_NAME = "backchannel:routes"


@dataclass(frozen=True)
class Route:
    name: str
    steps: tuple[str, ...]
    handler: MessageHandler


def parse_path(path: str) -> tuple[str, tuple[str, ...]]:
    """Split ``{ns}a/{ns}b/...`` into the root tag and the child steps (Clark names keep
    their ``/``-free namespaces intact; a namespace with ``/`` in it is handled)."""
    parts: list[str] = []
    i = 0
    while i < len(path):
        if path[i] == "{":
            end = path.index("}", i)
            slash = path.find("/", end)
        else:
            slash = path.find("/", i)
        if slash < 0:
            parts.append(path[i:])
            break
        parts.append(path[i:slash])
        i = slash + 1
    if not parts or not all(parts):
        raise ValueError(f"not a stanza path: {path!r}")
    return parts[0], tuple(parts[1:])


def has_path(element: ET.Element, steps: tuple[str, ...]) -> bool:
    if not steps:
        return True
    first, rest = steps[0], steps[1:]
    return any(child.tag == first and has_path(child, rest) for child in element)


class Routes(MatcherBase):
    """The matcher of the connection's one slixmpp handler, and the dispatch behind it."""

    def __init__(self) -> None:
        super().__init__(HANDLER_NAME)
        self._by_root: dict[str, list[Route]] = {}
        self._matched: tuple[ET.Element | None, list[Route]] = (None, [])

    def add(self, path: str, handler: MessageHandler, name: str) -> None:
        root, steps = parse_path(path)
        self._by_root.setdefault(root, []).append(Route(name, steps, handler))

    def remove(self, name: str) -> None:
        for root, routes in list(self._by_root.items()):
            kept = [r for r in routes if r.name != name]
            if kept:
                self._by_root[root] = kept
            else:
                del self._by_root[root]

    def names(self) -> list[str]:
        return [r.name for routes in self._by_root.values() for r in routes]

    def match(self, xml: Any) -> bool:
        """slixmpp asks this for every incoming stanza; remember the matches for ``run``."""
        element: ET.Element = xml.xml
        routes = self._by_root.get(element.tag)
        if not routes:
            return False
        matched = [r for r in routes if has_path(element, r.steps)]
        self._matched = (element, matched)
        return bool(matched)

    def run(self, stanza: Any) -> None:
        element: ET.Element = stanza.xml
        cached, matched = self._matched
        if cached is not element:  # not expected, but never dispatch a stale match
            matched = [r for r in self._by_root.get(element.tag, [])
                       if has_path(element, r.steps)]
        self._matched = (None, [])
        for route in matched:
            try:
                route.handler(element)
            except Exception:  # one handler's bug must not hide the stanza from the others
                log.exception("stanza handler %s failed", route.name)

    def callback(self) -> Callback:
        return Callback(HANDLER_NAME, self, self.run)
