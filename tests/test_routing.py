"""pubsub.routing (one-handler stanza dispatch) and pubsub.slixmpp_speedups."""

from __future__ import annotations

from types import SimpleNamespace
from xml.etree import ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pubsub.routing import Routes, has_path, parse_path

EV = "http://jabber.org/protocol/pubsub#event"
NOTIFY = f"{{jabber:client}}message/{{{EV}}}event/{{{EV}}}items"


def stanza(xml: str) -> SimpleNamespace:
    return SimpleNamespace(xml=ET.fromstring(xml))


def test_parse_path_keeps_namespaces_with_slashes() -> None:
    assert parse_path(NOTIFY) == ("{jabber:client}message", (f"{{{EV}}}event", f"{{{EV}}}items"))
    assert parse_path("{jabber:client}presence") == ("{jabber:client}presence", ())
    with pytest.raises(ValueError, match="not a stanza path"):
        parse_path("{jabber:client}message//x")


def test_has_path_is_any_chain_of_children_like_find() -> None:
    el = ET.fromstring(f"<m xmlns='jabber:client'><event xmlns='{EV}'><other/></event>"
                       f"<event xmlns='{EV}'><items/></event></m>")
    assert has_path(el, (f"{{{EV}}}event", f"{{{EV}}}items"))
    assert el.find(f"{{{EV}}}event/{{{EV}}}items") is not None  # the semantics we copy
    assert not has_path(el, (f"{{{EV}}}items",))  # only direct children, not descendants


def test_routes_dispatch_in_order_isolate_failures_and_unregister() -> None:
    routes = Routes()
    seen: list[str] = []

    def broken(_: ET.Element) -> None:
        raise RuntimeError("handler bug")

    routes.add("{jabber:client}message/{jabber:client}body", lambda e: seen.append("chat"),
               "chat")
    routes.add("{jabber:client}message/{jabber:client}body", broken, "broken")
    routes.add(NOTIFY, lambda e: seen.append("notify"), "notify")
    routes.add("{jabber:client}message/{jabber:client}body", lambda e: seen.append("late"),
               "late")
    chat = stanza("<message xmlns='jabber:client'><body>hi</body></message>")
    assert routes.match(chat)
    routes.run(chat)
    assert seen == ["chat", "late"]  # the broken one in between did not stop "late"

    presence = stanza("<presence xmlns='jabber:client'/>")
    assert not routes.match(presence)  # unmatched stanzas stay unhandled for slixmpp

    routes.remove("chat")
    routes.remove("late")
    routes.remove("broken")
    assert not routes.match(chat)
    assert routes.names() == ["notify"]
    note = stanza(f"<message xmlns='jabber:client'><event xmlns='{EV}'><items node='n'/>"
                  "</event></message>")
    assert routes.match(note)
    routes.run(note)
    assert seen[-1] == "notify"


@given(st.text())
def test_fast_escape_matches_slixmpp(text: str) -> None:
    from pubsub import slixmpp_speedups

    original = slixmpp_speedups._original_escape
    assert slixmpp_speedups.escape(text) == original(text)
    assert slixmpp_speedups.escape(text, True) == original(text, True)


def test_fast_escape_is_what_slixmpp_serialises_with() -> None:
    import importlib

    import pubsub.connection  # noqa: F401  (installs the speedup)
    from pubsub import slixmpp_speedups

    module = importlib.import_module("slixmpp.xmlstream.tostring")
    assert module.escape is slixmpp_speedups.escape
    el = ET.Element("{jabber:client}body")
    el.text = "a < b & \"c\" > 'd'"
    assert module.tostring(el) == ('<body xmlns="jabber:client">'
                                     "a &lt; b &amp; &quot;c&quot; &gt; &apos;d&apos;</body>")
