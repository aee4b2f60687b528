"""The operator command set, as chat transcripts against an in-memory backend.

Each test reads as "who says what, and what comes back". ``say`` answers like a front
door would: the result's text, or the text of the CommandError it raised.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backchannel.errors import CommandError, NotConnected, PermissionDenied, UsageError
from commands import render
from commands.builtin import builtin_registry
from commands.dispatch import DENIED, Dispatcher
from commands.model import (
    Argument,
    AuditRecord,
    Command,
    Context,
    InternalCommandError,
    RateLimited,
    Result,
    Role,
    role_of,
)
from commands.parse import clean_line, parse_duration, parse_time, tokenize
from commands.registry import Registry
from tests.fakes_backend import FakeBackend

ROOM = "ops@conference.example.com"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Bot:
    backend: FakeBackend = field(default_factory=FakeBackend)
    clock: Clock = field(default_factory=Clock)
    audit: list[AuditRecord] = field(default_factory=list)
    rate: int | None = None
    dispatcher: Dispatcher = field(init=False)

    def __post_init__(self) -> None:
        self.dispatcher = Dispatcher(builtin_registry(), audit=self.audit.append,
                                     rate_per_minute=self.rate, clock=self.clock)

    def who(self, jid: str, role: Role, where: str = "chat", room: str | None = None) -> Context:
        target = room if room else (jid if where in ("chat", "adhoc") else "")
        return Context(jid, role, where, self.backend, room, target)  # type: ignore[arg-type]

    async def run(self, ctx: Context, line: str) -> Result:
        return await self.dispatcher.run(line, None, ctx)

    async def say(self, ctx: Context, line: str) -> str:
        try:
            return (await self.dispatcher.run(line, None, ctx)).text
        except CommandError as exc:
            return str(exc)


@pytest.fixture
def bot() -> Bot:
    return Bot()


@pytest.fixture
def stranger(bot: Bot) -> Context:
    return bot.who("mallory@evil.example", Role.NOBODY)


@pytest.fixture
def viewer(bot: Bot) -> Context:
    return bot.who("vera@example.com", Role.VIEWER)


@pytest.fixture
def alice(bot: Bot) -> Context:
    return bot.who("alice@example.com", Role.OPERATOR)


@pytest.fixture
def admin(bot: Bot) -> Context:
    return bot.who("root@example.com", Role.ADMIN)


EVERY_COMMAND = [
    "status", "stats", "stats 1h", "events", "events --type user.* --last 3", "show EV0001",
    "deadletters", "dl list", "deadletters show DL1", "deadletters retry DL1",
    "deadletters retry all", "deadletters purge", "replay --since 1h", "feeds",
    "subscribe signups", "unsubscribe signups", "geocode Toluca Lake, CA", "pause crm",
    "resume crm", "version",
]


# -- access -----------------------------------------------------------------------------


@pytest.mark.security
async def test_a_stranger_may_only_ask_for_help_and_whoami(bot: Bot, stranger: Context) -> None:
    for line in EVERY_COMMAND:
        assert await bot.say(stranger, line) == DENIED, line
    assert bot.backend.calls == []  # nothing was even looked at
    text = await bot.say(stranger, "help")
    assert "`help [COMMAND]`" in text and "`whoami`" in text
    assert "status" not in text and "deadletters" not in text
    assert "role *nobody*" in await bot.say(stranger, "whoami")
    assert {r.outcome for r in bot.audit} == {"denied", "ok"}


@pytest.mark.security
async def test_help_lists_only_what_the_role_may_run(
    bot: Bot, viewer: Context, alice: Context, admin: Context
) -> None:
    seen = await bot.say(viewer, "help")
    assert "`status`" in seen and "`deadletters list [--last N]`" in seen
    assert "pause" not in seen and "purge" not in seen and "confirm" not in seen
    assert "`pause SERVICE`" in await bot.say(alice, "help")
    assert "`deadletters purge`" in await bot.say(admin, "help")
    assert await bot.say(viewer, "help pause") == "No command `pause` you may run. Try `help`."
    group = await bot.say(viewer, "help deadletters")
    assert "`deadletters show ID`" in group and "`deadletters retry" not in group
    assert "`deadletters retry all`" in await bot.say(alice, "help dl")


async def test_help_for_one_command_shows_usage_and_options(bot: Bot, viewer: Context) -> None:
    text = await bot.say(viewer, "help events")
    assert text.startswith("`events [--type GLOB] [--source S] [--last N]`")
    assert "`--last N`: how many (default 10, at most 100)" in text
    assert "Asks for confirmation" in await bot.say(viewer.__class__(
        "x@example.com", Role.OPERATOR, "chat", viewer.backend), "help replay")
    assert await bot.say(viewer, "? stats") == await bot.say(viewer, "help stats")


@pytest.mark.security
async def test_admin_commands_only_in_private(bot: Bot, admin: Context) -> None:
    in_room = bot.who("root@example.com", Role.ADMIN, "groupchat", ROOM)
    assert "only works in a private chat" in await bot.say(in_room, "deadletters purge")
    assert "Reply `confirm " in await bot.say(admin, "deadletters purge")


@pytest.mark.security
async def test_role_of_uses_the_real_bare_jid() -> None:
    roles: dict[str, str | Role] = {"alice@example.com": "operator", "root@example.com": Role.ADMIN}
    assert role_of("Alice@Example.com/phone", roles) is Role.OPERATOR
    assert role_of("root@example.com", roles) is Role.ADMIN
    assert role_of("ops@conference.example.com/alice", roles) is Role.NOBODY
    assert role_of("mallory@evil.example", roles) is Role.NOBODY
    assert Role.NOBODY < Role.VIEWER < Role.OPERATOR < Role.ADMIN


# -- looking ------------------------------------------------------------------------------


async def test_status(bot: Bot, viewer: Context) -> None:
    result = await bot.run(viewer, "status")
    assert "*backchannel* on `xmpp.example.com`: connected, up 1h 2m" in result.text
    assert "Queue 12, in flight 3" in result.text
    assert "crm *open*" in result.text and "geocode closed" in result.text
    assert "```\ncomponent  state    detail\nworker     running  3 tasks" in result.text
    assert result.json()["breakers"] == {"geocode": "closed", "crm": "open"}


async def test_stats_windows(bot: Bot, viewer: Context) -> None:
    text = await bot.say(viewer, "stats")
    assert "*Last 5m*: 4.25 events/s" in text and "geocode" in text
    await bot.say(viewer, "stats 1h30m")
    assert bot.backend.calls[-1] == ("stats", (5400.0,))
    assert await bot.say(viewer, "stats soon") == (
        "WINDOW must be a duration like 30s, 5m or 1h, not `soon`."
    )
    assert "Unexpected `2h`. Usage: `stats [WINDOW]`" in await bot.say(viewer, "stats 1h 2h")


async def test_events_filters_caps_and_typos(bot: Bot, viewer: Context) -> None:
    result = await bot.run(viewer, "events --type user.profile* --last=5")
    assert bot.backend.calls[-1] == ("events", ("user.profile*", None, 5))
    assert result.text.startswith("*5 events*, newest first") and "EV0147" in result.text
    assert len(result.json()["events"]) == 5
    capped = await bot.run(viewer, "events --last 500")
    assert "(capped at 100)" in capped.text and len(capped.json()["events"]) == 100
    assert "--last must be at least 1" in await bot.say(viewer, "events --last 0")
    assert "Did you mean `--type`?" in await bot.say(viewer, "events --tpye user.*")
    assert "--last needs a value" in await bot.say(viewer, "events --last")
    assert "--type is given twice" in await bot.say(viewer, "events --type a --type b")
    # a phone turned "--" into an em dash and "…" into smart quotes
    await bot.say(viewer, "events —source “https://shop.example.com” —last 2")
    assert bot.backend.calls[-1] == ("events", (None, "https://shop.example.com", 2))  # type: ignore[comparison-overlap]
    assert await bot.say(viewer, "events --type nothing.*") == "No events match."


async def test_show_traces_one_event(bot: Bot, viewer: Context) -> None:
    text = await bot.say(viewer, "show EV0001")
    assert "*Event* `EV0001`: `user.registered`" in text
    assert "failed   HTTP 503" in text and "callback" in text
    assert await bot.say(viewer, "show nope") == "No event `nope`. `events` lists recent ones."
    assert await bot.say(viewer, "trace EV0001") == text


async def test_typos_get_a_suggestion_among_what_you_may_run(
    bot: Bot, viewer: Context, stranger: Context
) -> None:
    assert await bot.say(viewer, "stauts") == (
        "Unknown command `stauts`. Did you mean `stats` or `status`? Try `help`."
    )
    assert await bot.say(stranger, "stauts") == "Unknown command `stauts`. Try `help`."
    assert await bot.say(viewer, "STATUS") == await bot.say(viewer, "status")
    assert await bot.say(viewer, "deadletters shwo DL1") == (
        "`deadletters` has no subcommand `shwo`. Did you mean `deadletters show`?"
        " Try `help deadletters`."
    )
    assert await bot.say(viewer, "   ") == "Say `help` to see what I can do."


# -- dead letters and confirmation --------------------------------------------------------


@pytest.mark.security
async def test_deadletters_by_role(bot: Bot, viewer: Context, alice: Context) -> None:
    listing = await bot.say(viewer, "deadletters")
    assert listing.startswith("*3 dead letters*") and "DL2" in listing
    assert await bot.say(viewer, "dl --last 1") != listing
    assert "HTTP 503 from crm" in await bot.say(viewer, "dl show DL1")
    assert await bot.say(viewer, "deadletters retry DL1") == DENIED
    assert await bot.say(alice, "deadletters retry DL1") == "Queued `DL1` again."
    assert await bot.say(alice, "deadletters retry DL1") == "No dead letter `DL1`."
    assert bot.backend.retried == ["DL1"]


@pytest.mark.security
async def test_retry_all_asks_first_and_runs_once(bot: Bot, alice: Context) -> None:
    asked = await bot.run(alice, "deadletters retry all")
    token = asked.confirm_token
    assert token and asked.text.endswith(f"Reply `confirm {token}` within 60 s to go ahead.")
    assert "retry_all_deadletters" not in [c[0] for c in bot.backend.calls]
    assert await bot.say(alice, f"confirm {token}") == "Queued 3 dead letters again."
    assert "nothing waiting" in await bot.say(alice, f"confirm {token}")  # single use
    assert [r.outcome for r in bot.audit] == ["pending", "ok", "error"]
    assert bot.audit[1].command == "deadletters retry all" and bot.audit[1].detail == "confirmed"


@pytest.mark.security
async def test_only_the_same_caller_in_the_same_chat_can_confirm(
    bot: Bot, alice: Context
) -> None:
    bob = bot.who("bob@example.com", Role.ADMIN)
    alice_in_room = bot.who("alice@example.com", Role.OPERATOR, "groupchat", ROOM)
    token = (await bot.run(alice, "deadletters retry all")).confirm_token
    assert token is not None
    assert "nothing waiting" in await bot.say(bob, f"confirm {token}")
    assert "nothing waiting" in await bot.say(alice_in_room, f"confirm {token}")
    assert bot.backend.retried == []
    # phones capitalize the first letter of a message
    assert await bot.say(alice, f"Confirm {token.upper()}") == "Queued 3 dead letters again."


@pytest.mark.security
async def test_confirmation_expires(bot: Bot, alice: Context) -> None:
    token = (await bot.run(alice, "deadletters retry all")).confirm_token
    bot.clock.t += 61
    assert await bot.say(alice, f"confirm {token}") == (
        "That confirmation expired after 60 s; run `deadletters retry all` again."
    )
    assert bot.backend.retried == []


@pytest.mark.security
async def test_confirmation_rechecks_the_role(bot: Bot, admin: Context) -> None:
    token = (await bot.run(admin, "deadletters purge")).confirm_token
    demoted = bot.who("root@example.com", Role.OPERATOR)
    assert await bot.say(demoted, f"confirm {token}") == DENIED
    assert len(bot.backend.dead) == 3


@pytest.mark.security
async def test_purge(bot: Bot, admin: Context, alice: Context) -> None:
    assert await bot.say(alice, "deadletters purge") == DENIED
    asked = await bot.say(admin, "deadletters purge")
    assert asked.startswith("This *deletes every dead letter*")
    token = asked.split("`confirm ")[1].split("`")[0]
    assert await bot.say(admin, f"confirm {token}") == "Purged 3 dead letters."
    assert await bot.say(admin, "dl") == "No dead letters."


async def test_replay(bot: Bot, alice: Context) -> None:
    asked = await bot.run(alice, "replay --since 2026-12-04T15:01:00Z --type user.registered")
    assert "of type `user.registered` received since 2026-12-04T15:01:00Z" in asked.text
    done = await bot.say(alice, f"confirm {asked.confirm_token}")
    assert done == "Replaying 60 events since 2026-12-04T15:01:00Z."
    before = datetime.now(UTC)
    await bot.dispatcher.run("replay", {"since": "1h"}, alice, assume_yes=True)
    after = datetime.now(UTC)
    since, glob = bot.backend.replayed[-1]
    assert glob is None and before - timedelta(hours=1) <= since <= after - timedelta(hours=1)
    assert await bot.say(alice, "replay") == (
        "Missing --since TIME. Usage: `replay --since TIME [--type GLOB]`"
    )
    assert "must be a time" in await bot.say(alice, "replay --since yesterday")
    assert "in the future" in await bot.say(alice, "replay --since 2999-01-01T00:00:00Z")
    assert len(bot.backend.replayed) == 2


# -- feeds, geocoding, services ---------------------------------------------------------


async def test_subscribe_relays_into_the_room_it_was_asked_in(bot: Bot) -> None:
    alice = bot.who("alice@example.com", Role.OPERATOR, "groupchat", ROOM)
    assert await bot.say(alice, "subscribe Signups") == (
        "Relaying `signups` here. `unsubscribe signups` stops it."
    )
    assert bot.backend.subs == {ROOM: {"signups"}}
    assert "`signups` (relayed here)" in await bot.say(alice, "feeds")
    assert "already relayed" in await bot.say(alice, "subscribe signups")
    assert await bot.say(alice, "subscribe signupz") == (
        "No feed `signupz`. Did you mean `signups`? Known: `signups`, `activity`."
    )
    assert await bot.say(alice, "unsubscribe signups") == "Stopped relaying `signups` here."
    assert await bot.say(alice, "unsubscribe signups") == "`signups` was not relayed here."
    cli = bot.who("alice", Role.ADMIN, "cli")
    assert "no chat to relay" in await bot.say(cli, "subscribe signups")


async def test_geocode_takes_the_rest_of_the_line(bot: Bot, viewer: Context) -> None:
    text = await bot.say(viewer, "geocode   Toluca   Lake, CA")
    assert "`34.1522, -118.3534`  geo:34.1522,-118.3534" in text and "provider" in text
    assert await bot.say(viewer, "geocode O'Brien St, Springfield") == (
        "No match for `O'Brien St, Springfield`."
    )
    await bot.say(viewer, 'geocode "10 Downing St, London"')
    assert bot.backend.calls[-1] == ("geocode", ("10 Downing St, London",))
    await bot.say(viewer, 'geocode "Main St')  # an unclosed quote in free text is fine
    assert bot.backend.calls[-1] == ("geocode", ('"Main St',))
    result = await bot.run(viewer, "geocode nowhere")
    assert not result.ok and result.json() == {"query": "nowhere", "match": None}
    assert "Missing ADDRESS..." in await bot.say(viewer, "geocode")


async def test_pause_and_resume(bot: Bot, alice: Context, viewer: Context) -> None:
    assert await bot.say(alice, "pause CRM") == (
        "Paused `crm`: its tasks wait until `resume crm`."
    )
    assert "Paused: `crm`" in await bot.say(viewer, "status")
    assert await bot.say(alice, "pause sms") == (
        "No service `sms`. Known: `geocode`, `crm`, `mailing_list`."
    )
    assert await bot.say(alice, "resume crm") == "Resumed `crm`."
    assert bot.backend.paused == []


async def test_whoami_and_version(bot: Bot, alice: Context) -> None:
    text = await bot.say(alice, "whoami")
    assert text.startswith("You are `alice@example.com`, role *operator*, in chat.")
    assert "`pause`" in text and "`deadletters purge`" not in text
    assert await bot.say(alice, "version") == "backchannel `0.1.0`"


async def test_every_result_is_json(bot: Bot, admin: Context) -> None:
    for line in [*EVERY_COMMAND, "help", "help events", "help dl", "whoami"]:
        result = await bot.run(admin, line)
        json.dumps(result.json())
        if result.confirm_token:
            json.dumps((await bot.run(admin, f"confirm {result.confirm_token}")).json())


# -- other front doors ---------------------------------------------------------------------


async def test_named_arguments_from_a_form_or_the_cli(bot: Bot, viewer: Context) -> None:
    form = bot.who("vera@example.com", Role.VIEWER, "adhoc")
    result = await bot.dispatcher.run("events", {"type": "user.*", "last": "2"}, form)
    assert len(result.json()["events"]) == 2
    assert (await bot.dispatcher.run("dl show", {"id": "DL0"}, form)).json()["id"] == "DL0"
    with pytest.raises(UsageError, match="Unknown argument `colour`"):
        await bot.dispatcher.run("events", {"colour": "red"}, form)
    with pytest.raises(UsageError, match="Unknown command `nope`"):
        await bot.dispatcher.run("nope", {}, form)
    with pytest.raises(PermissionDenied):
        await bot.dispatcher.run("pause", {"service": "crm"}, form)
    names = {c.name for c in bot.dispatcher.visible(Role.VIEWER)}
    assert {"status", "deadletters list", "help"} <= names
    assert not names & {"pause", "confirm", "deadletters purge"}


# -- limits, audit, failures -------------------------------------------------------------


async def test_rate_limit_per_user() -> None:
    bot = Bot(rate=3)
    alice = bot.who("alice@example.com", Role.OPERATOR)
    bob = bot.who("bob@example.com", Role.OPERATOR)
    for _ in range(3):
        await bot.run(alice, "version")
    with pytest.raises(RateLimited, match=r"at most 3 commands a minute\. Try again in 20 s") as e:
        await bot.run(alice, "version")
    assert e.value.retry_after == pytest.approx(20.0)
    assert not e.value.repeated
    with pytest.raises(RateLimited) as e:
        await bot.run(alice, "help")
    assert e.value.repeated  # a front door can stay quiet
    await bot.run(bob, "version")  # others are not affected
    bot.clock.t += 20
    await bot.run(alice, "version")
    assert [r.outcome for r in bot.audit].count("ratelimited") == 2


@pytest.mark.security
async def test_audit_records_every_attempt(bot: Bot, alice: Context, stranger: Context) -> None:
    await bot.say(alice, "events --type user.* --last 5")
    await bot.say(stranger, "pause crm")
    await bot.say(alice, "pause")
    await bot.say(alice, "show missing")
    await bot.say(alice, "geocode " + "x" * 3000)
    ok, denied, usage, error, long = bot.audit
    assert (ok.who, ok.where, ok.command, ok.outcome) == (
        "alice@example.com", "chat", "events", "ok")
    assert ok.args == "type='user.*', last=5"
    assert (denied.command, denied.outcome, denied.args) == ("pause", "denied", "")
    assert (usage.outcome, error.outcome) == ("usage", "error")
    assert error.detail == "No event `missing`. `events` lists recent ones."
    assert long.outcome == "usage" and len(long.args) <= 200
    assert all(r.at.tzinfo is not None for r in bot.audit)


async def test_a_failing_audit_hook_does_not_break_commands(
    alice: Context, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(record: AuditRecord) -> None:
        raise OSError("disk full")

    dispatcher = Dispatcher(builtin_registry(), audit=broken)
    with caplog.at_level(logging.ERROR):
        assert (await dispatcher.run("version", None, alice)).ok
    assert dispatcher.counts["audit_failed"] == 1 and "audit hook failed" in caplog.text


@pytest.mark.security
async def test_a_bug_is_logged_with_a_reference_and_nothing_leaks(
    bot: Bot, viewer: Context, caplog: pytest.LogCaptureFixture
) -> None:
    bot.backend.fail_next = RuntimeError("password=hunter2")
    with caplog.at_level(logging.ERROR), pytest.raises(InternalCommandError) as e:
        await bot.run(viewer, "status")
    assert str(e.value) == f"internal error, logged as {e.value.ref}"
    assert e.value.ref in caplog.text and "hunter2" not in str(e.value)
    assert bot.audit[-1].outcome == "error" and "hunter2" not in bot.audit[-1].detail
    bot.backend.fail_next = NotConnected("stream closed")
    assert "not connected to the XMPP server" in await bot.say(viewer, "status")


async def test_slow_and_broken_handlers() -> None:
    async def slow(ctx: Context, args: Mapping[str, Any]) -> Result:
        import asyncio

        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def bad_data(ctx: Context, args: Mapping[str, Any]) -> Result:
        return Result(True, {"when": datetime.now(UTC)}, "oops")

    registry = Registry([Command("slow", "never ends", slow, role=Role.NOBODY),
                         Command("bad", "not JSON", bad_data, role=Role.NOBODY)])
    dispatcher = Dispatcher(registry, audit=None, timeout=0.05)
    ctx = Context("a@example.com", Role.NOBODY, "chat", FakeBackend())
    with pytest.raises(CommandError, match="took longer than 0 s and was stopped"):
        await dispatcher.run("slow", None, ctx)
    with pytest.raises(InternalCommandError):
        await dispatcher.run("bad", None, ctx)


# -- hostile input -----------------------------------------------------------------------


async def test_hostile_lines_get_clear_answers(bot: Bot, viewer: Context) -> None:
    assert await bot.say(viewer, "geocode " + "a" * 5000) == (
        "That message is 5008 characters long; commands are limited to 4096."
    )
    assert await bot.say(viewer, "status\x00") == (
        "Control characters are not accepted (U+0000 at position 7)."
    )
    assert "U+001B" in await bot.say(viewer, "show \x1b[31mred")
    # invisible bidi and zero-width characters are dropped
    assert await bot.say(viewer, "\u202estat\u200bus\ufeff") == await bot.say(viewer, "status")
    assert "never closed" in await bot.say(viewer, 'events --type "user.*')
    assert await bot.say(viewer, "show <iq type='set'><query/></iq>") == (
        "Unexpected `type=set><query/></iq>`. Usage: `show ID`"
    )
    assert await bot.say(viewer, "show \"<iq type='set'/>\"") == (
        "No event `<iq type='set'/>`. `events` lists recent ones."
    )
    await bot.say(viewer, "geocode $(rm -rf /); `reboot` && echo *")
    assert bot.backend.calls[-1] == ("geocode", ("$(rm -rf /); `reboot` && echo *",))
    echoed = await bot.say(viewer, "show a`b")  # a backtick cannot break the code span
    assert echoed == "No event `a'b`. `events` lists recent ones."
    zalgo = "Z" + "\u0301" * 50 + "urich"
    await bot.say(viewer, f"geocode {zalgo}")
    assert bot.backend.calls[-1][1][0].count("\u0301") <= 4


async def test_fuzzed_input_only_ever_raises_command_errors(bot: Bot, admin: Context) -> None:
    rng = random.Random(4)
    alphabet = [
        *"abcdefghijklmnopqrstuvwxyz -=\"'\\`*<>&;$|", "--", "—", "“", "”", "\u202e",
        "\u200b", "\u0301", "\x00", "\x07", "\ud800", "\n", "\t", "é", "日", "🙂", "\ufffe",
    ]
    words = ["status", "stats", "events", "--type", "--last", "show", "deadletters", "retry",
             "all", "purge", "replay", "--since", "geocode", "help", "confirm", "dl", "pause"]
    fuzz = Dispatcher(builtin_registry(), audit=None, rate_per_minute=None)
    for _ in range(600):
        parts = [rng.choice(words) if rng.random() < 0.4 else
                 "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
                 for _ in range(rng.randint(0, 6))]
        line = " ".join(parts)
        try:
            result = await fuzz.run(line, None, admin)
        except InternalCommandError:
            pytest.fail(f"a bug on {line!r}")
        except CommandError:
            continue
        json.dumps(result.json())
    for value in ["", "x" * 5000, "\x00", 12, -5, None, ["a"], {"a": 1}, True, 1e309]:
        for name, key in [("events", "last"), ("stats", "window"), ("replay", "since")]:
            with contextlib.suppress(UsageError):
                await fuzz.run(name, {key: value}, admin, assume_yes=True)


def test_tokenizer_and_cleaning() -> None:
    assert [t.text for t in tokenize('a "b c" d\\ e --x="y z"').items] == [
        "a", "b c", "d e", "--x=y z"]
    assert [t.text for t in tokenize("O'Brien don't").items] == ["O'Brien", "don't"]
    assert tokenize("'unclosed here").unclosed_quote == 0
    assert [t.text for t in tokenize("‘single’ „low“").items] == ["single", "low"]  # noqa: RUF001
    assert clean_line("  e\u0301 \u200d ") == "é"
    assert parse_duration("1h30m") == 5400.0 and parse_duration("90") == 90.0
    assert parse_duration("2 days") == 172800.0
    for bad in ["", "5x", "m", "1h 5", "9" * 50]:
        with pytest.raises(ValueError):
            parse_duration(bad)
    now = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
    assert parse_time("1h", now) == now - timedelta(hours=1)
    assert parse_time("30m ago", now) == now - timedelta(minutes=30)
    assert parse_time("2026-12-04T15:00:00+01:00", now) == datetime(2026, 12, 4, 14, tzinfo=UTC)
    assert parse_time("2026-12-04 15:00", now).tzinfo is UTC
    with pytest.raises(ValueError):
        parse_time("2026", now)


def test_schema_mistakes_are_caught_at_definition() -> None:
    async def h(ctx: Context, args: Mapping[str, Any]) -> Result:
        return Result(True, None, "")

    with pytest.raises(ValueError):
        Argument("bad name")
    with pytest.raises(ValueError):
        Argument("c", "choice")
    with pytest.raises(ValueError):
        Command("x", "", h, arguments=(Argument("a", rest=True), Argument("b")))
    with pytest.raises(ValueError):
        Registry([Command("x", "", h), Command("y", "", h, aliases=("x",))])


# -- rendering -----------------------------------------------------------------------------


def test_tables_align_even_with_wide_characters() -> None:
    text = render.table(("name", "n"), [("東京", 5), ("Zürich", 12), ("x`\n```", None)])
    lines = text.split("\n")
    assert lines[0] == "```" and lines[-1] == "```"
    assert lines[1:5] == ["name     n", "東京     5", "Zürich  12", "x` ```   -"]


def test_chunks_stay_under_the_limit_and_keep_code_blocks_whole() -> None:
    text = "intro\n" + render.table(("id", "v"), [(f"row{i}", i) for i in range(200)]) + "\nend"
    parts = render.chunks(text, 300)
    assert len(parts) > 5
    for part in parts:
        assert len(part) <= 300
        assert part.count("```") % 2 == 0, part
    assert [p for p in "\n".join(parts).split("\n") if p.startswith("row")] == [
        line for line in text.split("\n") if line.startswith("row")]
    assert "".join(render.chunks("x" * 1000, 100)) == "x" * 1000
    assert all(len(p) <= 100 for p in render.chunks("```\n" + "y" * 1000 + "\n```", 100))
    assert render.chunks("short") == ["short"]


def test_durations_read_naturally() -> None:
    shown = [render.duration(s) for s in (0, 42.5, 60, 3600, 3720, 86405, 90061)]
    assert shown == ["0s", "42s", "1m", "1h", "1h 2m", "1d", "1d 1h"]


async def test_an_unknown_command_is_audited_by_its_first_word(bot: Bot, viewer: Context) -> None:
    await bot.say(viewer, "frobnicate --password hunter2")
    (record,) = bot.audit
    assert (record.command, record.outcome) == ("frobnicate", "usage")
    assert "hunter2" not in record.command
