"""``backchannel <operator command> ...``: run a command on the running bot over XMPP.

Why through the bot: the worker's state lives in the running process; the CLI logs in as
the ``operator`` account and sends the command line to the bot's XEP-0050 ``line`` node
(``bot@domain/bot``), so it gets the same parser, roles, confirmation, rate limit and
audit as the chat, and prints the same text. ``--json`` prints the structured data
instead. A command that needs confirmation is confirmed by ``--yes``, or asked on a
terminal; elsewhere it is not run.

Exit status: 0 on success, 1 when the command failed or was refused, 2 for usage errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import sys
from dataclasses import dataclass, field
from typing import Any

from backchannel.errors import (
    BackchannelError,
    ConfigError,
    UsageExit,
    XmppRefused,
    XmppTimeout,
)
from bot.adhoc_client import LINE_NODE, AdhocClient, Reply, bot_full_jid

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
USAGE = """\
usage: backchannel [-c FILE] [--json] [--yes] COMMAND [ARGS...]

Runs an operator command (status, events, show ID, deadletters ..., help) on the
running bot over XMPP, as the `operator` account. `backchannel help` lists the commands.
  -c, --config FILE  the config file
  --json             print the result's data as JSON
  -y, --yes          confirm commands that ask for confirmation"""
PLAIN = re.compile(r"^[^\s\"'\\“‘„«]+$")  # noqa: RUF001 - the quotes the parser knows
OFFLINE = {"service-unavailable", "recipient-unavailable", "item-not-found",
           "remote-server-not-found"}


@dataclass
class Options:
    words: list[str] = field(default_factory=list)
    config: str | None = None
    json: bool = False
    yes: bool = False


def parse_argv(argv: list[str]) -> Options:
    """Our options anywhere in ``argv``; the other words are the command line."""
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-c", "--config"):
            if i + 1 >= len(argv):
                raise UsageExit(f"{arg} needs a file")
            opts.config = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            opts.config = arg.partition("=")[2]
        elif arg == "--json":
            opts.json = True
        elif arg in ("-y", "--yes"):
            opts.yes = True
        elif arg in ("-v", "-vv", "--verbose") and not opts.words:
            pass  # the global verbosity flag; this front door logs nothing worth raising
        elif arg in ("-h", "--help") and not opts.words:
            raise UsageExit("")
        else:
            opts.words.append(arg)
        i += 1
    if not opts.words:
        raise UsageExit("no command given")
    return opts


def quote(word: str) -> str:
    """A shell word as the chat parser reads it back (double quotes when needed)."""
    if word and PLAIN.match(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command_line(words: list[str]) -> str:
    return " ".join(quote(w) for w in words)


def run(argv: list[str]) -> int:
    try:
        opts = parse_argv(argv)
    except UsageExit as exc:
        print(f"backchannel: {exc}\n{USAGE}" if str(exc) else USAGE, file=sys.stderr)
        return EXIT_USAGE
    from backchannel.cli import load_settings

    try:
        settings = load_settings(opts.config)
    except ConfigError as exc:
        print(f"backchannel: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(execute(settings, opts))
    except KeyboardInterrupt:
        return EXIT_FAILURE


async def execute(settings: Any, opts: Options) -> int:
    """Run ``opts.words`` on the bot; print the outcome; return the exit status."""
    from pubsub.connection import XmppConnection

    bot = bot_full_jid(settings.account("bot").bare)
    conn = XmppConnection(settings.xmpp, settings.account("operator"),
                          resource=f"cli-{secrets.token_hex(3)}")
    try:
        await conn.start(timeout=15.0)
        client = AdhocClient(conn, bot)
        reply = await client.execute(LINE_NODE, {"line": command_line(opts.words)})
        if reply.asks_confirmation:
            confirmed = await confirm(client, reply, opts)
            if confirmed is None:
                return EXIT_FAILURE
            reply = confirmed
        return show(reply, opts)
    except XmppRefused as exc:
        if exc.condition in OFFLINE:
            print(f"backchannel: the bot ({bot}) is not online; is `backchannel run` running "
                  "with the bot component?", file=sys.stderr)
        else:
            print(f"backchannel: the bot refused the request: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except XmppTimeout as exc:
        print(f"backchannel: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BackchannelError as exc:
        print(f"backchannel: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await conn.close()


async def confirm(client: AdhocClient, reply: Reply, opts: Options) -> Reply | None:
    question = reply.instructions or reply.text
    if not opts.yes:
        if not sys.stdin.isatty():
            await client.cancel(reply)
            print(f"{question}\nNot confirmed: run again with --yes to go ahead.",
                  file=sys.stderr)
            return None
        print(question)
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(None, input, "Go ahead? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            await client.cancel(reply)
            print("Cancelled; nothing was done.", file=sys.stderr)
            return None
    return await client.submit(reply, {"confirm": "true"})


def show(reply: Reply, opts: Options) -> int:
    outcome = reply.outcome
    good = outcome == "ok" and reply.ok
    if opts.json:
        doc = reply.data if good else {"ok": False, "outcome": outcome, "error": reply.text,
                                       "data": reply.data}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    elif good or outcome == "ok":
        print(reply.text)
    else:
        print(reply.text, file=sys.stderr)
    if good:
        return EXIT_OK
    return EXIT_USAGE if outcome == "usage" else EXIT_FAILURE
