"""The chat front door through a real XMPP server, with a real worker behind the bot.

Transcripts: an operator (admin) chats and every command answers; a stranger is refused
everything but ``help`` and ``whoami``; the same in a room with public JIDs; a room that
hides real JIDs gets one clear refusal; hostile input gets a clear reply and the bot
stays up.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from backchannel.localserver import ManagedServer, ServerState
from commands.dispatch import DENIED
from pubsub.client import PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import JSON_NS
from tests.bot_harness import (
    Chatter,
    bot_world,
    open_room_hiding_real_jids,
    room_name,
    stranger_account,
)
from tests.pipeline_harness import wait_until

pytestmark = pytest.mark.integration

TOKEN = re.compile(r"`confirm ([0-9a-f]+)`")
EVERY_COMMAND = [
    "status", "stats 1h", "events --last 5", "show 01ABC", "deadletters list",
    "deadletters show 1", "deadletters retry 1", "deadletters retry all", "deadletters purge",
    "replay --since 1h", "feeds", "subscribe signups", "unsubscribe signups",
    "geocode Paris, France", "pause geocode", "resume geocode", "version",
]


def token_in(text: str) -> str:
    found = TOKEN.search(text)
    assert found, text
    return found.group(1)


@pytest.mark.security
async def test_operator_transcript(server_state: ServerState, bootstrapped: Any,
                                   tmp_path: Path) -> None:
    async with bot_world(server_state, tmp_path) as w:
        op = await w.client("operator")
        events = w.pipeline.registrations(3)
        await w.pipeline.publish_many(events)
        worker = w.runtime.worker
        await wait_until(lambda: worker.store.counts().get("done", 0) == 3, 30, "3 done")

        assert "(role admin)" in await op.ask("help")
        assert "`deadletters purge`" in await op.ask("help")
        assert "replay --since TIME" in await op.ask("help replay")
        assert "You are `operator@localhost`, role *admin*, in chat." in await op.ask("whoami")
        status = await op.ask("status")
        assert ": connected, up" in status and re.search(r"bot\s+running", status), status
        assert "backchannel 0." in await op.ask("version")
        stats = await op.ask("stats 1h")
        assert "*Last 1h*" in stats and "geocode" in stats, stats
        listed = await op.ask("events --last 5 --type user.*")
        assert "*3 events*" in listed and all(e.id in listed for e in events), listed
        trace = await op.ask(f"show {events[0].id}")
        assert events[0].id in trace and "geocode" in trace and "callback" in trace, trace
        assert "No event" in await op.ask("show 01NOSUCHEVENT0000000000000")
        assert "`signups`" in await op.ask("feeds")
        geo = await op.ask("geocode Paris, France")
        assert "48.85" in geo and "FR" in geo, geo
        assert "Paused `geocode`" in await op.ask("pause geocode")
        assert "paused: geocode" in await op.ask("status")
        assert "Resumed `geocode`" in await op.ask("resume geocode")
        assert "No dead letters." in await op.ask("deadletters list")
        bad = ET.Element(f"{{{JSON_NS}}}json")
        bad.text = "{not json"
        await PubSub(w.pipeline.site_conn, w.settings.xmpp.pubsub_service).publish(
            w.settings.nodes.events, "bad-item-1", bad)
        await wait_until(lambda: bool(worker.store.deadletters(5)), 10, "a dead letter")
        listed = await op.ask("deadletters list")
        assert "bad-item-1" in listed, listed
        dl_id = str(worker.store.deadletters(5)[0].id)
        assert "not well-formed JSON" in await op.ask(f"deadletters show {dl_id}")
        # confirmation: the question, a wrong token, then the right one, used once
        question = await op.ask("deadletters purge")
        assert "cannot be retried" in question and "Reply `confirm" in question
        assert "nothing waiting" in await op.ask("confirm 00000000")
        assert await op.ask(f"confirm {token_in(question)}") == "Purged 1 dead letter."
        assert "nothing waiting" in await op.ask(f"confirm {token_in(question)}")
        assert "No dead letters." in await op.ask("dl")
        question = await op.ask("replay --since 1h")
        assert "Replaying 3 events" in await op.ask(f"confirm {token_in(question)}")
        assert "Relaying `signups` here" in await op.ask("subscribe signups")
        assert "(relayed here)" in await op.ask("feeds")
        assert "Stopped relaying" in await op.ask("unsubscribe signups")
        # typos and unknown commands
        assert "Did you mean `stats` or `status`?" in await op.ask("stauts")
        assert "Unknown command `frobnicate`. Try `help`." in await op.ask("frobnicate")
        assert "Did you mean `deadletters list`" in await op.ask("deadletters lsit")
        assert ": connected" in await op.ask("!status")  # the prefix works in chat too

        audit = w.bot.audit_rows(200)
        assert any(a["command"] == "deadletters purge" and a["outcome"] == "pending"
                   for a in audit), audit[:3]
        assert all(a["who"] == "operator@localhost" for a in audit)
        assert {a["where"] for a in audit} == {"chat"}


@pytest.mark.security
async def test_stranger_may_only_ask_for_help_and_whoami(
    server_state: ServerState, managed: ManagedServer, bootstrapped: Any, tmp_path: Path
) -> None:
    async with bot_world(server_state, tmp_path) as w:
        stranger = await w.client(stranger_account(managed, server_state))
        for line in EVERY_COMMAND:
            assert await stranger.ask(line) == DENIED, line
        helped = await stranger.ask("help")
        assert "(role nobody)" in helped and "`status`" not in helped, helped
        assert "role *nobody*" in await stranger.ask("whoami")
        assert "Did you mean" not in await stranger.ask("stauts")  # reveals nothing
        denied = [a for a in w.bot.audit_rows(100) if a["outcome"] == "denied"]
        assert len(denied) == len(EVERY_COMMAND)
        assert {a["who"] for a in denied} == {"stranger@localhost"}


async def _join_and_wait(chatter: Chatter, room: str, nick: str, bot_nick: str) -> None:
    """Join ``room``; wait until the bot answers there (it is in the room too)."""
    chatter.join(room, nick)
    reply = await chatter.ask(f"{bot_nick}: whoami", to=room, kind="groupchat",
                              expect_from=f"{room}/{bot_nick}", to_nick=nick)
    assert reply.startswith(f"{nick}: You are"), reply


@pytest.mark.security
async def test_room_transcript(server_state: ServerState, managed: ManagedServer,
                               bootstrapped: Any, tmp_path: Path) -> None:
    room = room_name("ops", server_state)
    async with bot_world(server_state, tmp_path, rooms=(room,)) as w:
        await wait_until(lambda: w.bot.rooms.rooms[room].joined, 10, "bot in the room")
        nick = w.settings.bot.nick
        bot_in_room = f"{room}/{nick}"
        op = await w.client("operator")
        await _join_and_wait(op, room, "op", nick)
        stranger = await w.client(stranger_account(managed, server_state))
        await _join_and_wait(stranger, room, "operator", nick)  # a nick proves nothing

        nicks = {id(op): "op", id(stranger): "operator"}

        async def say(who: Chatter, line: str) -> str:
            return await who.ask(line, to=room, kind="groupchat", expect_from=bot_in_room,
                                 to_nick=nicks[id(who)])

        whoami = await say(op, f"{nick}: whoami")
        assert "`operator@localhost`, role *admin*, in groupchat " + room in whoami, whoami
        status = await say(op, "!status")
        assert status.startswith("op:\n") or status.startswith("op: "), status
        assert ": connected, up" in status
        assert "48.85" in await say(op, f"{nick}, geocode Paris, France")
        assert "only works in a private chat" in await say(op, "!deadletters purge")
        question = await say(op, "!replay --since 1h")
        assert "Replaying" in await say(op, f"!confirm {token_in(question)}")
        assert "Relaying `signups` here" in await say(op, "!subscribe signups")
        assert w.bot.relays.subscriptions(room) == ["signups"]
        assert "Stopped relaying" in await say(op, "!unsubscribe signups")

        assert (await say(stranger, "!status")).endswith(DENIED)
        assert "role *nobody*" in await say(stranger, f"{nick}: whoami")
        assert "(role nobody)" in await say(stranger, "!help")

        # chatter not addressed to the bot gets no answer: the next answer is to "!version"
        since = len(op.inbox)
        op.conn.send_message(room, "status of the deploy, anyone?", "groupchat")
        op.conn.send_message(room, "backchannelx: status", "groupchat")
        version = await say(op, "!version")
        answers = op.from_(bot_in_room, since, to_nick="op")
        assert len(answers) == 1 and "backchannel 0." in version, [a.body for a in answers]
        rooms_audit = [a for a in w.bot.audit_rows(100) if a["where"] == "groupchat"]
        assert rooms_audit and all(a["room"] == room for a in rooms_audit)


@pytest.mark.security
async def test_room_that_hides_real_jids_gets_one_refusal(
    server_state: ServerState, bootstrapped: Any, connect: Any, tmp_path: Path
) -> None:
    room = room_name("semi", server_state)
    owner: XmppConnection = await connect("operator", "owner")
    await open_room_hiding_real_jids(owner, room)
    async with bot_world(server_state, tmp_path, rooms=(room,)) as w:
        await wait_until(lambda: w.bot.rooms.rooms[room].joined, 10, "bot in the room")
        assert not w.bot.rooms.rooms[room].non_anonymous
        nick = w.settings.bot.nick
        op = await w.client("operator")
        op.join(room, "op")
        reply = await op.ask(f"{nick}: status", to=room, kind="groupchat",
                             expect_from=f"{room}/{nick}")
        assert "hides members' real JIDs" in reply, reply
        since = len(op.inbox)
        op.conn.send_message(room, "!status", "groupchat")
        op.conn.send_message(op.bot_jid, "version", "chat")  # a private chat still works
        got = await op.wait_for(op.bot_jid, since)
        assert "backchannel 0." in got[0].body
        assert not op.from_(f"{room}/{nick}", since)  # refused once, not once per line
        assert not [a for a in w.bot.audit_rows(50) if a["where"] == "groupchat"]


HOSTILE = [
    "x" * 65536,
    "status " + "é" * 5000,
    "\u202estatus\u202c",  # bidi override around a command
    "sta\u200btus",  # zero-width space inside
    "\uff53\uff54\uff41\uff54\uff55\uff53",  # fullwidth "status"
    "geocode " + "a\u0301\u0301\u0301\u0301\u0301\u0301\u0301\u0301" * 20,
    "<iq type='set'><query xmlns='jabber:iq:roster'/></iq>",
    "geocode <script>alert(1)</script> ]]> &amp; &lt;",
    "show '; DROP TABLE events; --",
    "pause $(reboot)",
    "events --type `rm -rf /` --last 5",
    "geocode \"unclosed",
    "events --last 99999999999999999999",
    "deadletters retry ../../etc/passwd",
    "\U0001F4A9" * 300,
    "help " + "deadletters " * 400,
]


async def test_hostile_input_gets_a_clear_reply_and_the_bot_stays_up(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    async with bot_world(server_state, tmp_path) as w:
        op = await w.client("operator")
        sessions = w.bot.conn.sessions
        for line in HOSTILE:
            reply = await op.ask(line)
            assert reply.strip(), line[:40]
            assert "Traceback" not in reply and "internal error" not in reply, (line[:40], reply)
        assert "limited to" in await op.ask("x" * 65536)
        assert "No service `$(reboot)`" in await op.ask("pause $(reboot)")
        assert ": connected" in await op.ask("status")
        assert w.bot.conn.sessions == sessions and w.bot.chat.failures == 0
