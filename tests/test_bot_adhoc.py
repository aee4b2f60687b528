"""The XEP-0050 front door and the CLI that uses it, through a real server.

A client lists the commands its role may run, runs ``status``, fills a form generated
from an argument schema, completes a confirmation step; sessions belong to the JID that
started them and expire; the CLI prints what the chat prints.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from backchannel import cli_operator
from backchannel.errors import XmppRefused
from backchannel.localserver import ManagedServer, ServerState
from bot.adhoc_client import AdhocClient
from bot.forms import NS_DATA, command_form
from commands.model import Argument, Command, Result, Role
from tests.bot_harness import World, bot_world, stranger_account

pytestmark = pytest.mark.integration

VIEWER = "worker@localhost"  # the worker account doubles as a viewer here


async def adhoc(w: World, account: Any, resource: str = "adhoc") -> AdhocClient:
    chatter = await w.client(account, resource)
    return AdhocClient(chatter.conn, w.bot_jid, timeout=15)


@pytest.mark.security
async def test_commands_are_listed_per_role_and_status_runs(
    server_state: ServerState, managed: ManagedServer, bootstrapped: Any, tmp_path: Path
) -> None:
    async with bot_world(server_state, tmp_path, roles={VIEWER: "viewer"}) as w:
        admin = await adhoc(w, "operator")
        viewer = await adhoc(w, "worker")
        stranger = await adhoc(w, stranger_account(managed, server_state))

        admin_nodes = {n for n, _ in await admin.commands()}
        viewer_nodes = {n for n, _ in await viewer.commands()}
        stranger_nodes = {n for n, _ in await stranger.commands()}
        assert {"status", "deadletters-purge", "pause", "replay", "line"} <= admin_nodes
        assert "confirm" not in admin_nodes  # hidden
        assert {"status", "events", "deadletters-list"} <= viewer_nodes
        assert not {"pause", "replay", "deadletters-purge"} & viewer_nodes
        assert stranger_nodes == {"line", "help", "whoami"}

        reply = await admin.execute("status")
        assert reply.status == "completed" and reply.ok and reply.outcome == "ok"
        assert ": connected, up" in reply.text
        assert {c["name"] for c in reply.data["components"]} >= {"worker", "bot"}

        with pytest.raises(XmppRefused) as refused:
            await stranger.execute("status")
        assert refused.value.condition == "forbidden"
        denied = [a for a in w.bot.audit_rows(20) if a["outcome"] == "denied"]
        assert denied and denied[0]["who"] == "stranger@localhost"
        assert denied[0]["where"] == "adhoc"
        whoami = await stranger.execute("whoami")
        assert "role *nobody*, in adhoc" in whoami.text


@pytest.mark.security
async def test_forms_from_the_schema_and_a_confirmation_step(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    async with bot_world(server_state, tmp_path) as w:
        admin = await adhoc(w, "operator")
        form = await admin.execute("events")
        assert form.status == "executing" and form.form_type == "form"
        assert form.field_types == {"FORM_TYPE": "hidden", "type": "text-single",
                                    "source": "text-single", "last": "text-single"}
        assert form.fields["last"] == ["10"]  # the default
        done = await admin.submit(form, {"last": "2", "type": "user.*"})
        assert done.status == "completed" and done.text == "No events match."
        bad = await admin.execute("events", {"last": "many"})
        assert bad.outcome == "usage" and not bad.ok, bad
        print(bad.text)

        # a command with arguments and confirmation: form, question, yes
        form = await admin.execute("replay")
        assert "since" in form.field_types
        question = await admin.submit(form, {"since": "1h"})
        assert question.asks_confirmation and question.field_types["confirm"] == "boolean"
        assert "processes again every event" in question.instructions
        done = await admin.submit(question, {"confirm": "true"})
        assert done.status == "completed" and done.text == "Replaying 0 events since " + \
            done.data["since"] + "."
        # no: nothing happens
        question = await admin.execute("deadletters-retry-all")
        assert question.asks_confirmation
        declined = await admin.submit(question, {"confirm": "false"})
        assert declined.text == "Cancelled; nothing was done." and not declined.ok
        # cancel in the middle
        form = await admin.execute("replay")
        assert (await admin.cancel(form)).status == "canceled"
        outcomes = [(a["command"], a["outcome"]) for a in w.bot.audit_rows(20)]
        assert ("replay", "pending") in outcomes and ("replay", "ok") in outcomes


@pytest.mark.security
async def test_sessions_belong_to_their_jid_and_expire(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    async with bot_world(server_state, tmp_path) as w:
        mine = await adhoc(w, "operator", "phone")
        other = await adhoc(w, "operator", "laptop")  # same person, other client
        form = await mine.execute("deadletters-retry-all")
        with pytest.raises(XmppRefused) as refused:
            await other.submit(form, {"confirm": "true"})
        assert refused.value.condition == "bad-request"
        # the refused step left the session to its owner, who can still finish it
        done = await mine.submit(form, {"confirm": "true"})
        assert done.text == "Queued 0 dead letters again."

        form = await mine.execute("events")
        real = w.bot.adhoc._clock
        w.bot.adhoc._clock = lambda: real() + 121.0
        try:
            with pytest.raises(XmppRefused) as expired:
                await mine.submit(form, {"last": "1"})
        finally:
            w.bot.adhoc._clock = real
        assert expired.value.condition == "not-allowed"
        assert "expired" in str(expired.value)
        with pytest.raises(XmppRefused):
            await mine.submit(form, {"last": "1"})  # gone for good


def test_form_fields_follow_the_argument_kinds() -> None:
    async def nothing(ctx: Any, args: Any) -> Result:
        return Result(True, {}, "")

    command = Command("paint", "Paint it", nothing, role=Role.VIEWER, arguments=(
        Argument("colour", "choice", required=True, choices=("red", "blue"), help="which"),
        Argument("coats", "int", flag=True, default=2),
        Argument("wait", "duration", flag=True, default=30.0),
    ))
    form = command_form(command)
    fields = {f.get("var"): f for f in form.findall(f"{{{NS_DATA}}}field")}
    assert fields["colour"].get("type") == "list-single"
    assert fields["colour"].find(f"{{{NS_DATA}}}required") is not None
    options = [o.get("label") for o in fields["colour"].findall(f"{{{NS_DATA}}}option")]
    assert options == ["red", "blue"]
    assert fields["coats"].findtext(f"{{{NS_DATA}}}value") == "2"
    assert fields["wait"].findtext(f"{{{NS_DATA}}}value") == "30s"


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(cli_operator.run, list(argv))


async def test_cli_runs_commands_on_the_bot(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with bot_world(server_state, tmp_path) as w:
        cfg = str(w.pipeline.config_file)
        op = await w.client("operator")
        capsys.readouterr()
        assert await cli("version", "-c", cfg) == 0
        assert capsys.readouterr().out.strip() == await op.ask("version")

        assert await cli("-c", cfg, "status", "--json") == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["connected"] is True and doc["queue_depth"] == 0

        assert await cli("-c", cfg, "geocode", "Paris, France") == 0
        assert "48.85" in capsys.readouterr().out
        assert await cli("-c", cfg, "events", "--last", "3") == 0
        assert capsys.readouterr().out.strip() == "No events match."

        assert await cli("-c", cfg, "deadletters", "retry", "all") == 1  # stdin is no TTY
        err = capsys.readouterr().err
        assert "queues *every* dead letter" in err and "--yes" in err
        assert await cli("-c", cfg, "--yes", "deadletters", "retry", "all") == 0
        assert capsys.readouterr().out.strip() == "Queued 0 dead letters again."

        assert await cli("-c", cfg, "stauts") == 2
        assert "Did you mean `stats` or `status`?" in capsys.readouterr().err
        assert await cli("-c", cfg, "show", "NOPE") == 1
        assert await cli("-c", cfg) == 2
        assert "usage:" in capsys.readouterr().err
        assert [a["where"] for a in w.bot.audit_rows(3)] == ["adhoc"] * 3


async def test_cli_says_when_the_bot_is_not_running(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with bot_world(server_state, tmp_path, components=()) as w:
        assert await cli("-c", str(w.pipeline.config_file), "status") == 1
        assert "is not online" in capsys.readouterr().err
