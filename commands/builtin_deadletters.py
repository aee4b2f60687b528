"""The ``deadletters`` group: list, show, retry one, retry all, purge.

Why a group of separate commands rather than one command with a ``choice`` argument:
looking and touching need different roles (viewer, operator, admin), ``retry all`` and
``purge`` need confirmation while ``retry ID`` does not, and ``purge`` is private-chat
only. As separate :class:`~commands.model.Command` values, the dispatcher enforces all
of that the same way as for any other command, help lists only what the caller may run,
and each one is its own ad-hoc command with its own form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backchannel.errors import CommandError
from commands import render as r
from commands.model import Argument, Command, Context, Result, Role
from commands.registry import Group
from commands.views import DeadLetterView, iso, jsonable

MAX_LIST = 100

DEADLETTERS = Group(
    "deadletters", "Events that failed for good: list, inspect, retry, purge", aliases=("dl",)
)


def _one(d: DeadLetterView) -> str:
    return "\n".join((
        f"{r.bold('Dead letter')} {r.code(d.id)} for event {r.code(d.event_id)}",
        f"at {iso(d.at)} after {r.plural(d.attempts, 'attempt')}: {d.reason}",
        r.pre(d.last_error) if d.last_error else "",
    )).rstrip()


async def list_(ctx: Context, args: Mapping[str, Any]) -> Result:
    wanted = int(args["last"])
    found = await ctx.backend.deadletters(min(wanted, MAX_LIST))
    data = {"deadletters": jsonable(list(found)), "capped": wanted > MAX_LIST}
    if not found:
        return Result(True, data, "No dead letters.")
    rows = [(d.id, d.event_id, iso(d.at), d.attempts, d.reason) for d in found]
    text = (f"{r.bold(r.plural(len(found), 'dead letter'))}, newest first\n"
            + r.table(("id", "event", "at", "tries", "reason"), rows)
            + "\n`deadletters show ID` tells more.")
    return Result(True, data, text)


async def show(ctx: Context, args: Mapping[str, Any]) -> Result:
    found = await ctx.backend.deadletter(args["id"])
    if found is None:
        raise CommandError(f"No dead letter {r.code(args['id'], 40)}.")
    return Result(True, jsonable(found), _one(found))


async def retry(ctx: Context, args: Mapping[str, Any]) -> Result:
    if not await ctx.backend.retry_deadletter(args["id"]):
        raise CommandError(f"No dead letter {r.code(args['id'], 40)}.")
    return Result(True, {"retried": [args["id"]]}, f"Queued {r.code(args['id'])} again.")


async def retry_all(ctx: Context, args: Mapping[str, Any]) -> Result:
    count = await ctx.backend.retry_all_deadletters()
    return Result(True, {"retried": count}, f"Queued {r.plural(count, 'dead letter')} again.")


async def purge(ctx: Context, args: Mapping[str, Any]) -> Result:
    count = await ctx.backend.purge_deadletters()
    return Result(True, {"purged": count}, f"Purged {r.plural(count, 'dead letter')}.")


def deadletter_commands() -> tuple[Command, ...]:
    return (
        Command("deadletters list", "The newest dead letters", list_, role=Role.VIEWER,
                aliases=("deadletters", "deadletters ls"), arguments=(
                    Argument("last", "int", flag=True, default=20, minimum=1, metavar="N",
                             help=f"how many (default 20, at most {MAX_LIST})"),
                )),
        Command("deadletters show", "One dead letter and its last error", show,
                role=Role.VIEWER, arguments=(Argument("id", required=True),)),
        Command("deadletters retry", "Queue one dead letter again", retry,
                role=Role.OPERATOR, arguments=(Argument("id", required=True),)),
        Command("deadletters retry all", "Queue every dead letter again", retry_all,
                role=Role.OPERATOR, confirm=True,
                prompt=lambda args: "This queues *every* dead letter again."),
        Command("deadletters purge", "Delete every dead letter", purge, role=Role.ADMIN,
                confirm=True, private_only=True,
                prompt=lambda args: "This *deletes every dead letter*; they cannot be retried."),
    )
