"""Fuzzing the operator command set's front doors: chat text, ad-hoc/CLI named arguments.

Property: whatever a chat message holds, the bot's chat door routes it and answers with a
reply (text), never an exception, a traceback or an "internal error" (the dispatcher's
word for a crashed command). Named arguments (what the ad-hoc forms and the CLI send) of
any JSON-ish type give a result or a :class:`~backchannel.errors.CommandError`, never
another exception. The parser underneath (``clean_line``, ``tokenize``, ``parse_line``)
raises nothing but :class:`~backchannel.errors.UsageError`.

Everything runs against the in-memory backend of the command tests; no XMPP server is
involved (the chat door's connection is never started: a refusal it tries to send is
dropped as "not connected").
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel.config import Account, BotSettings, Secret, XmppSettings
from backchannel.errors import CommandError, UsageError
from bot.chat import ChatDoor
from bot.rooms import Rooms
from commands.builtin import builtin_registry
from commands.dispatch import Dispatcher
from commands.model import Context, InternalCommandError, Role
from commands.parse import clean_line, coerce, parse_line, tokenize
from pubsub.connection import XmppConnection
from tests.fakes_backend import FakeBackend
from tests.fuzz_support import FuzzRun, fuzz_run, leaks

pytestmark = pytest.mark.fuzz

ROOM = "ops@conference.example.com"
ROLES = {"root@example.com": "admin", "alice@example.com": "operator",
         "vera@example.com": "viewer"}
NOW = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)

REGISTRY = builtin_registry()
WORDS = sorted({w for c in REGISTRY for phrase in (c.name, *c.aliases) for w in phrase.split()}
               | {a.option for c in REGISTRY for a in c.flags}
               | {"confirm", "--", "—last", "–type", "help", "?", "!status", "all", "now",  # noqa: RUF001
                  "1h", "30m ago", "-5", "0", "99999999999999", "2026-12-04T15:00:00Z",
                  "EV0001", "DL1", "signups", "crm", "geocode", "user.*"})
any_char = st.characters(codec=None, exclude_categories=())
fragments = (st.sampled_from(WORDS) | st.sampled_from(WORDS)
             | st.text("abc -=\"'\\`*<>&;$|“”„«»‘’—–\u202e\u200b\u0301\t\n",  # noqa: RUF001
                       max_size=8)
             | st.text(any_char, max_size=6))
PHRASES = sorted({phrase for c in REGISTRY for phrase in (c.name, *c.aliases)})
command_lines = st.tuples(st.sampled_from(PHRASES), st.lists(fragments, max_size=6)).map(
    lambda t: " ".join([t[0], *t[1]]))
lines = (command_lines | command_lines | command_lines
         | st.lists(fragments, max_size=8).map(" ".join)
         | st.text(any_char, max_size=200)
         | st.builds(lambda w, n: w * n, fragments, st.sampled_from([500, 1000, 5000])))
senders = st.sampled_from([*ROLES, "mallory@evil.example", "backchannel@localhost"]).flatmap(
    lambda bare: st.sampled_from([bare, f"{bare}/phone", f"{bare}/"]))
room_senders = st.sampled_from([f"{ROOM}/alice", f"{ROOM}/backchannel", f"{ROOM}/", ROOM,
                                "other@conference.example.com/x"])
kinds = st.sampled_from(["chat"] * 8 + ["normal", "groupchat", "error", "headline", "", "x"])
prefixes = st.sampled_from([""] * 6 + ["!", "backchannel: ", "Backchannel,", "  !  "])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(any_char, max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6,
)


def message(sender: str, kind: str, body: str) -> ET.Element:
    xml = ET.Element("{jabber:client}message", {"from": sender, "type": kind})
    ET.SubElement(xml, "{jabber:client}body").text = body
    return xml


class Door:
    """A chat door as the bot builds it, over a connection that is never started."""

    def __init__(self, conn: XmppConnection) -> None:
        self.backend = FakeBackend()
        self.dispatcher = Dispatcher(builtin_registry(), audit=None, rate_per_minute=None)
        settings = BotSettings(roles=ROLES)  # type: ignore[arg-type]
        self.chat = ChatDoor(conn, settings, self.dispatcher, self.backend,
                             Rooms(conn, settings.nick, [ROOM]))


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def judge_reply(run: FuzzRun, what: object, reply: Any) -> None:
    assert isinstance(reply, str), f"reply is {type(reply).__name__}"
    assert "internal error" not in reply, f"a command crashed on {what!r}: {reply}"
    assert leaks(reply) is None, reply


def test_fuzz_commands(long_mode: bool, server_kind: str,
                       loop: asyncio.AbstractEventLoop) -> None:
    conn = loop.run_until_complete(_connection())
    try:
        with fuzz_run("commands", long_mode=long_mode, server_kind=server_kind,
                      ci_cases=800) as run:
            _chat(run, loop, conn)
            _named(run, loop, conn)
            _parser(run)
    finally:
        loop.run_until_complete(conn.close())


async def _connection() -> XmppConnection:
    return XmppConnection(XmppSettings(), Account("backchannel@localhost", Secret("x")))


def _chat(run: FuzzRun, loop: asyncio.AbstractEventLoop, conn: XmppConnection) -> None:
    @run.hypothesis(0.6)
    @given(turns=st.lists(st.tuples(senders | senders | senders | room_senders, kinds,
                                    prefixes, lines),
                          min_size=1, max_size=3), confirm=st.booleans())
    def chat(turns: list[tuple[str, str, str, str]], confirm: bool) -> None:
        door = Door(conn)
        for sender, kind, prefix, line in turns:
            with run.case((sender, kind, prefix + line)):
                incoming = door.chat.route(message(sender, kind, prefix + line))
                if incoming is None:
                    continue
                reply = loop.run_until_complete(door.chat.run(incoming))
                judge_reply(run, line, reply)
                token = reply.partition("Reply `confirm ")[2].partition("`")[0]
                if confirm and token:  # go through with it, as the same person
                    again = loop.run_until_complete(door.chat.run(
                        type(incoming)(f"confirm {token}", incoming.caller, incoming.where,
                                       incoming.reply_to, incoming.kind, incoming.room)))
                    judge_reply(run, line, again)
        assert door.chat.failures == 0

    chat()


def _named(run: FuzzRun, loop: asyncio.AbstractEventLoop, conn: XmppConnection) -> None:
    names = sorted({c.name for c in REGISTRY} | {"nosuch", "", "deadletters"})
    argument_names = sorted({a.name for c in REGISTRY for a in c.arguments} | {"x", ""})

    @run.hypothesis(0.25)
    @given(name=st.sampled_from(names) | st.text(any_char, max_size=10),
           args=st.dictionaries(st.sampled_from(argument_names), json_values, max_size=3),
           role=st.sampled_from(list(Role)),
           where=st.sampled_from(["chat", "groupchat", "adhoc", "cli"]),
           assume_yes=st.booleans())
    def named(name: str, args: dict[str, Any], role: Role, where: str,
              assume_yes: bool) -> None:
        door = Door(conn)
        ctx = Context("root@example.com", role, where, door.backend,  # type: ignore[arg-type]
                      ROOM if where == "groupchat" else None)
        with run.case((name, args, role, where)):
            try:
                result = loop.run_until_complete(
                    door.dispatcher.run(name, args, ctx, assume_yes=assume_yes))
            except InternalCommandError as exc:
                raise AssertionError(f"{name} crashed on {args!r}: {exc}") from exc
            except CommandError as exc:
                judge_reply(run, (name, args), str(exc))
                return
            json.dumps(result.json())
            judge_reply(run, (name, args), result.text)

    named()


def _parser(run: FuzzRun) -> None:
    commands = sorted(REGISTRY, key=lambda c: c.name)

    @run.hypothesis(0.15)
    @given(command=st.sampled_from(commands), line=lines,
           values=st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    def parser(command: Any, line: str, values: dict[str, Any]) -> None:
        with run.case((command.name, line)):
            try:
                cleaned = clean_line(line)
            except UsageError as exc:  # nothing behind it sees such a line
                judge_reply(run, line, str(exc))
                return
            tokens = tokenize(cleaned)
            assert all(t.start <= t.end <= len(cleaned) for t in tokens.items)
            for call in (lambda: parse_line(command, cleaned, tokens, 0, NOW),
                         lambda: coerce(command, values, NOW)):
                try:
                    call()
                except UsageError as exc:
                    judge_reply(run, line, str(exc))

    parser()
