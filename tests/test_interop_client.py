"""Interop: an XMPP client we did not write talks to backchannel through the real server.

The client is xmpp.js (npm ``@xmpp/client``, JavaScript, its own stream, SASL SCRAM,
stanza building and parsing), driven by ``tests/interop/xmppjs-bridge.mjs``: this file
only says what to do (subscribe, send a line) and reads what the client received. Nothing
of slixmpp or of our own XMPP code is on the client side.

(a) It subscribes to the signups feed node with a plain XEP-0060 ``<subscribe/>`` and
    receives the signup our worker publishes for an event a site sent.
(b) It chats with the bot, the way Jabber clients send a line (chat states, receipt
    request, origin-id): an operator gets the right answers, a stranger the polite refusal;
    then the operator joins a room (XEP-0045) and is known there by real JID, not by nick.

``scripts/bootstrap.sh`` with ``BACKCHANNEL_WITH_TEST_TOOLS=1`` installs the client into
``tests/interop/node_modules``. Without it the tests skip on a developer's machine and fail
under CI (``CI=true``), where a skipped interop check would go unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from backchannel.localserver import ManagedServer, ServerState
from commands.dispatch import DENIED
from tests.bot_harness import RELAY, bot_world, room_name, stranger_account
from tests.pipeline_harness import wait_until

pytestmark = pytest.mark.integration

INTEROP = Path(__file__).parent / "interop"
BRIDGE = INTEROP / "xmppjs-bridge.mjs"
CLIENT_PACKAGE = INTEROP / "node_modules" / "@xmpp" / "client" / "package.json"
INSTALL_HINT = ("install it with `BACKCHANNEL_WITH_TEST_TOOLS=1 scripts/bootstrap.sh` "
                "(npm ci in tests/interop)")


def node_binary() -> str:
    """The node executable, or skip (dev machine) / fail (CI) saying what is missing."""
    node = shutil.which("node")
    missing = ("Node.js (`node`) is not on PATH" if node is None else
               f"xmpp.js is not installed ({CLIENT_PACKAGE} is missing)"
               if not CLIENT_PACKAGE.exists() else "")
    if missing:
        message = f"interop client unavailable: {missing}; {INSTALL_HINT}"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    assert node is not None
    return node


@pytest.fixture(autouse=True)
def _client_installed() -> None:
    """Check for the client before a test starts its (slower) world."""
    node_binary()


class XmppJs:
    """One running xmpp.js client: commands in on stdin, what it saw out on stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self.login: dict[str, Any] = {}
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"xmppjs:{name}")
        self._errors = asyncio.create_task(self._read_stderr(), name=f"xmppjs-err:{name}")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                self.events.append(json.loads(line))
            except json.JSONDecodeError:
                self.events.append({"event": "noise", "text": line})
            self._arrived.set()
        self.events.append({"event": "exited"})
        self._arrived.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self.stderr += chunk

    def describe(self, since: int = 0) -> str:
        seen = [{k: (str(v)[:120] if isinstance(v, str) else v) for k, v in e.items()}
                for e in self.events[since:]]
        err = self.stderr.decode("utf-8", "replace")[-3000:]
        return f"xmpp.js ({self.name}) saw {seen}" + (f"\nits stderr (tail):\n{err}"
                                                       if err else "")

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    async def wait_for(self, match: Callable[[dict[str, Any]], bool], since: int = 0,
                       count: int = 1, timeout: float = 10.0, what: str = "") -> list[
                           dict[str, Any]]:
        """The first ``count`` events since index ``since`` that ``match``; fails on an
        error event, the client exiting, or the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            got = [e for e in self.events[since:] if match(e)]
            if len(got) >= count:
                return got[:count]
            trouble = [e for e in self.events[since:] if e["event"] in ("error", "exited")]
            left = deadline - time.monotonic()
            if trouble or left <= 0:
                if trouble:  # its last words, on stderr
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(self._errors), 1)
                why = "it reported trouble" if trouble else f"nothing within {timeout:.0f} s"
                raise AssertionError(f"waiting for {what or 'an event'}: {why}; "
                                     + self.describe(since))
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def ask(self, bot_jid: str, line: str, timeout: float = 10.0) -> str:
        """Send ``line`` to the bot as a phone or desktop client would; the answer's text.

        First a bare "composing" chat state (no body: must get no answer), then the line
        with an active chat state, a receipt request and an origin-id.
        """
        since = len(self.events)
        self.send(op="send", to=bot_jid, body="", chatstate="composing")
        self.send(op="send", to=bot_jid, body=line, chatstate="active", receipt=True,
                  origin_id=True)
        bare = bot_jid.partition("/")[0]
        answers = await self.wait_for(
            lambda e: e["event"] == "message" and e["from"].partition("/")[0] == bare
            and not RELAY.match(e["body"]), since, timeout=timeout,
            what=f"the bot's answer to {line!r}")
        assert answers[0]["type"] == "chat", self.describe(since)
        return str(answers[0]["body"])

    async def join(self, room: str, nick: str) -> None:
        since = len(self.events)
        self.send(op="join", room=room, nick=nick)
        await self.wait_for(lambda e: e["event"] == "joined" and e["room"] == room, since,
                            what=f"joining {room} as {nick}")

    async def ask_room(self, room: str, bot_nick: str, nick: str, line: str,
                       timeout: float = 10.0) -> str:
        """Say ``bot_nick: line`` in ``room``; the bot's answer addressed to ``nick``."""
        since = len(self.events)
        self.send(op="send", to=room, type="groupchat", body=f"{bot_nick}: {line}",
                  chatstate="active", origin_id=True)
        answers = await self.wait_for(
            lambda e: e["event"] == "message" and e["from"] == f"{room}/{bot_nick}"
            and e["body"].startswith(f"{nick}:")
            and not RELAY.match(e["body"].removeprefix(f"{nick}: ")), since,
            timeout=timeout, what=f"the bot's answer to {line!r} in {room}")
        assert answers[0]["type"] == "groupchat", self.describe(since)
        return str(answers[0]["body"])

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                self.send(op="quit")
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(self._reader, self._errors), 5)


@contextlib.asynccontextmanager
async def xmppjs(state: ServerState, account: str, password: str,
                 resource: str = "interop") -> AsyncIterator[XmppJs]:
    """An xmpp.js client logged in as ``account``, with presence sent."""
    node = node_binary()
    env = {**os.environ, "XMPP_SERVICE": f"xmpp://127.0.0.1:{state.c2s_port}",
           "XMPP_DOMAIN": state.domain, "XMPP_USERNAME": account, "XMPP_PASSWORD": password,
           "XMPP_RESOURCE": resource}
    proc = await asyncio.create_subprocess_exec(
        node, str(BRIDGE), cwd=INTEROP, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    client = XmppJs(proc, account)
    try:
        [client.login] = await client.wait_for(lambda e: e["event"] == "online", timeout=15,
                                               what=f"{account} to log in")
        yield client
    finally:
        await client.close()


async def test_xmppjs_receives_a_signup_from_the_feed_node(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    async with bot_world(server_state, tmp_path, components=("worker",)) as w:
        node = w.settings.nodes.feed("signups")
        async with xmppjs(server_state, "operator", server_state.accounts["operator"]) as js:
            js.send(op="subscribe", service=server_state.pubsub_service, node=node)
            [sub] = await js.wait_for(lambda e: e["event"] == "subscribed",
                                      what=f"the subscription to {node}")
            assert sub["subscription"] == "subscribed", js.describe()

            events = w.pipeline.registrations(2, prefix="interop")
            await w.pipeline.publish_many(events)
            items = await js.wait_for(lambda e: e["event"] == "item" and e["node"] == node,
                                      count=2, timeout=15, what="two signups on the feed")

            by_id = {item["id"]: item for item in items}
            assert set(by_id) == {e.id for e in events}, js.describe()
            for event in events:
                item = by_id[event.id]
                assert item["from"] == server_state.pubsub_service, item
                assert item["xml"].startswith("<json") and "urn:xmpp:json:0" in item["xml"]
                signup = json.loads(item["json"])
                assert signup["type"] == "backchannel.feed.signup", signup
                assert signup["subject"] == event.id, signup
                assert signup["data"]["name"] == event.data["name"], signup
                assert signup["data"]["city"] == "Paris", signup
                assert signup["data"]["country_code"] == "FR", signup

            js.send(op="unsubscribe", service=server_state.pubsub_service, node=node)
            await js.wait_for(lambda e: e["event"] == "unsubscribed", what="unsubscribe")


async def test_xmppjs_talks_to_the_bot_as_operator_and_as_stranger(
    server_state: ServerState, managed: ManagedServer, bootstrapped: Any, tmp_path: Path
) -> None:
    room = room_name("interop", server_state)
    async with bot_world(server_state, tmp_path, rooms=(room,)) as w:
        bot = w.bot_jid.partition("/")[0]  # people write to the bare JID, as a contact
        async with xmppjs(server_state, "operator", server_state.accounts["operator"]) as op:
            # its own SASL: on an unencrypted loopback stream xmpp.js refuses PLAIN
            assert op.login["mechanism"].startswith("SCRAM-"), op.login
            whoami = await op.ask(bot, "whoami")
            assert whoami.startswith("You are `operator@localhost`, role *admin*, in chat."), \
                op.describe()
            status = await op.ask(bot, "status")
            assert ": connected, up" in status and re.search(r"bot\s+running", status), \
                f"{status}\n{op.describe()}"
            assert "(role admin)" in await op.ask(bot, "help"), op.describe()
            # one answer per line: the chat-state-only messages got none
            answers = [e for e in op.events if e["event"] == "message"
                       and not RELAY.match(e["body"])]
            assert len(answers) == 3, op.describe()

            # the same operator in a room: the bot finds the real JID behind the nick
            await wait_until(lambda: w.bot.rooms.rooms[room].joined, 10, "bot in the room")
            await op.join(room, "op")
            nick = w.settings.bot.nick
            whoami = await op.ask_room(room, nick, "op", "whoami")
            assert whoami.startswith(
                f"op: You are `operator@localhost`, role *admin*, in groupchat {room}"), \
                f"{whoami}\n{op.describe()}"

        stranger = stranger_account(managed, server_state)
        async with xmppjs(server_state, "stranger", stranger.password.reveal()) as who:
            assert await who.ask(bot, "status") == DENIED, who.describe()
            assert "role *nobody*" in await who.ask(bot, "whoami"), who.describe()
            helped = await who.ask(bot, "help")
            assert "(role nobody)" in helped and "`status`" not in helped, \
                f"{helped}\n{who.describe()}"
