"""Feed relays through a real server: prompt, batched, and still there after restarts.

After ``subscribe signups`` a signup reaches the chat within 2 s; a burst of 1000
signups in 10 s gives at most 10 messages that still count all 1000; a restarted bot
keeps its relays; a restarted XMPP server sees the bot reconnect, rejoin its room and go
on relaying, without duplicates.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from backchannel.localserver import ManagedServer, ServerState
from bot.component import start_bot
from pubsub.client import PubSub
from pubsub.envelope import make_event, to_element
from simulator.stack import SITE_SOURCE
from tests.bot_harness import Chatter, World, bot_world, room_name
from tests.pipeline_harness import wait_until

pytestmark = pytest.mark.integration

COUNT = re.compile(r"^(?:\w+: )?(\d+) new signups:")


def signups_in(body: str) -> int:
    """How many signups one relay message reports."""
    if body.removeprefix("backchannel: ").startswith("New signup:") or \
            re.match(r"^\w+: New signup:", body):
        return 1
    found = COUNT.match(body)
    return int(found.group(1)) if found else 0


async def publish_signup(w: World, name: str, city: str = "Lyon", cc: str = "FR") -> None:
    event = make_event("backchannel.feed.signup", SITE_SOURCE,
                       {"name": name, "city": city, "country_code": cc, "site": "shop"})
    ps = PubSub(w.runtime.connections["worker"], w.settings.xmpp.pubsub_service)
    await ps.publish(w.settings.nodes.feed("signups"), event.id, to_element(event))


async def test_a_signup_reaches_the_chat_within_two_seconds_and_survives_a_bot_restart(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    async with bot_world(server_state, tmp_path, relay_interval=1.0) as w:
        op = await w.client("operator")
        assert "Relaying `signups` here" in await op.ask("subscribe signups")
        since = len(op.inbox)
        started = time.monotonic()
        await w.pipeline.publish_many(w.pipeline.registrations(1, ["Paris, France"], "amy"))
        got = await op.wait_for(op.bot_jid, since, timeout=5)
        assert got[0].at - started < 2.0, got[0].at - started
        assert got[0].body == "New signup: User 0 (Paris, FR)", got[0].body

        # the bot restarts (same state file): the relay is still there and still relays
        await w.bot.close()
        await w.bot.conn.close()
        bot = await start_bot(w.runtime, w.stack)
        assert bot.relays.subscriptions("operator@localhost") == ["signups"]
        op.bot_jid = bot.conn.jid
        since = len(op.inbox)
        await publish_signup(w, "Zoé")
        got = await op.wait_for(op.bot_jid, since, timeout=5)
        assert got[0].body == "New signup: Zoé (Lyon, FR)"


async def test_a_burst_of_1000_signups_in_10_s_gives_at_most_10_messages(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    async with bot_world(server_state, tmp_path, components=("bot",)) as w:
        # the worker account publishes straight to the feed; no worker needed
        conn = await w.client("worker", "publisher")
        w.runtime.connections["worker"] = conn.conn
        op = await w.client("operator")
        assert "Relaying" in await op.ask("subscribe signups")
        since = len(op.inbox)
        start = time.monotonic()
        for batch in range(20):  # 50 every half second: 1000 in 10 s
            await asyncio.gather(*(publish_signup(w, f"P{batch}-{i}") for i in range(50)))
            delay = start + (batch + 1) * 0.5 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not waiting for a result
        await wait_until(lambda: sum(signups_in(m.body)
                                     for m in op.from_(op.bot_jid, since)) >= 1000,
                         10, "all 1000 signups reported")
        messages = op.from_(op.bot_jid, since)
        assert len(messages) <= 10, [m.body[:60] for m in messages]
        assert sum(signups_in(m.body) for m in messages) == 1000
        # The first of the burst goes out at once: alone, or with the few that arrived in
        # the same instant (the publisher sends 50 at a time).
        assert re.match(r"(New signup|\d+ new signups): P0-0 \(Lyon, FR\)", messages[0].body)
        assert re.search(r"new signups: .+, .+, .+ … and \d+ more$", messages[1].body)
        assert w.bot.relays.duplicates == 0


async def test_after_a_server_restart_the_bot_rejoins_and_relays_go_on(
    server_state: ServerState, managed: ManagedServer, bootstrapped: Any, tmp_path: Path
) -> None:
    room = room_name("relay", server_state)
    async with bot_world(server_state, tmp_path, rooms=(room,), relay_interval=0.5) as w:
        await wait_until(lambda: w.bot.rooms.rooms[room].joined, 10, "bot in the room")
        nick = w.settings.bot.nick
        op = await w.client("operator")
        op.join(room, "op")
        reply = await op.ask("!subscribe signups", to=room, kind="groupchat",
                             expect_from=f"{room}/{nick}", to_nick="op")
        assert "Relaying `signups` here" in reply
        assert "Relaying" in await op.ask("subscribe signups")
        sessions = w.bot.conn.sessions
        try:
            managed.stop()
        finally:
            managed.start()
        await wait_until(lambda: w.bot.conn.sessions > sessions and w.bot.conn.ready.is_set(),
                         30, "the bot back online")
        await wait_until(lambda: w.bot.rooms.rooms[room].joins >= 2, 10, "the bot back in")
        await wait_until(lambda: op.conn.ready.is_set() and
                         w.runtime.connections["worker"].ready.is_set(), 30, "clients back")
        op.join(room, "op")
        await op.ask(f"{nick}: version", to=room, kind="groupchat",
                     expect_from=f"{room}/{nick}", to_nick="op")

        first = len(op.inbox)
        await check_relayed_once(w, op, room, nick, "Ana")
        await check_relayed_once(w, op, room, nick, "Bea")
        assert sum("Ana" in m.body for m in op.inbox[first:]) == 2  # no late duplicate
        assert w.bot.relays.duplicates == 0


async def check_relayed_once(w: World, op: Chatter, room: str, nick: str, name: str) -> None:
    since = len(op.inbox)
    await publish_signup(w, name)
    await op.wait_for(f"{room}/{nick}", since)
    await op.wait_for(op.bot_jid, since)
    bodies = [m.body for m in op.inbox[since:] if m.sender.startswith(op.bot_jid) or
              m.sender == f"{room}/{nick}"]
    assert bodies.count(f"New signup: {name} (Lyon, FR)") == 2, bodies  # room + chat
