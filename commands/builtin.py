"""The built-in operator commands and :func:`builtin_registry`, which assembles them.

Why here, as plain data: each command is a :class:`~commands.model.Command` value whose
handler only talks to :class:`~commands.backend.OperatorBackend` and renders with
:mod:`commands.render`; the same values feed chat help, ad-hoc forms and the CLI. The
dead-letter commands are a group (``deadletters list|show|retry|retry all|purge``, alias
``dl``) because each subcommand needs its own role and confirmation; they live in
:mod:`commands.builtin_deadletters`. ``help`` and ``whoami`` need the registry, so they
are made by :func:`builtin_registry`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from backchannel.errors import CommandError, UsageError
from commands import render as r
from commands.builtin_deadletters import DEADLETTERS, deadletter_commands
from commands.model import Argument, Command, Context, Lazy, Result, Role
from commands.parse import usage
from commands.registry import Registry, did_you_mean
from commands.views import iso, jsonable

MAX_EVENTS = 100
MAX_ADDRESS = 500


def _pick(name: str, valid: Sequence[str], what: str) -> str:
    """``name`` from ``valid`` (case-blind), or a CommandError listing the valid ones."""
    for v in valid:
        if v.casefold() == name.casefold():
            return v
    near = difflib.get_close_matches(name, list(valid), n=1)
    hint = f" Did you mean {r.code(near[0])}?" if near else ""
    listed = ", ".join(r.code(v) for v in valid) or "none"
    raise CommandError(f"No {what} {r.code(name, 40)}.{hint} Known: {listed}.")


async def status(ctx: Context, args: Mapping[str, Any]) -> Result:
    view = await ctx.backend.status()
    link = "connected" if view.connected else r.bold("NOT connected")
    lines = [
        f"{r.bold('backchannel')} on {r.code(view.server)}: {link}, up {r.duration(view.uptime_s)}",
        f"Queue {view.queue_depth}, in flight {view.in_flight}",
    ]
    if view.components:
        lines.append(r.table(("component", "state", "detail"),
                             [(c.name, c.state, c.detail) for c in view.components]))
    if view.breakers:
        shown = [f"{name} {r.bold(state) if state != 'closed' else state}"
                 for name, state in sorted(view.breakers.items())]
        lines.append("Breakers: " + ", ".join(shown))
    if view.paused:
        lines.append("Paused: " + ", ".join(r.code(p) for p in view.paused))
    return Result(True, Lazy(lambda: jsonable(view)), "\n".join(lines))


async def stats(ctx: Context, args: Mapping[str, Any]) -> Result:
    window = float(args["window"])
    view = await ctx.backend.stats(window)
    head = f"{r.bold('Last ' + r.duration(window))}: {view.events_per_s:.2f} events/s"
    if not view.tasks:
        return Result(True, jsonable(view), head + "\nNo task ran in that window.")
    rows = [(t.task, t.successes, t.failures, t.p50_ms, t.p99_ms) for t in view.tasks]
    text = head + "\n" + r.table(("task", "ok", "failed", "p50 ms", "p99 ms"), rows)
    return Result(True, jsonable(view), text)


async def events(ctx: Context, args: Mapping[str, Any]) -> Result:
    wanted = int(args["last"])
    last = min(wanted, MAX_EVENTS)
    found = await ctx.backend.events(args["type"], args["source"], last)
    note = f" (capped at {MAX_EVENTS})" if wanted > MAX_EVENTS else ""
    data = {"events": jsonable(list(found)), "capped": wanted > MAX_EVENTS}
    if not found:
        return Result(True, data, "No events match." + note)
    rows = [(e.id, e.type, e.source, iso(e.received_at), e.state) for e in found]
    text = (f"{r.bold(r.plural(len(found), 'event'))}, newest first{note}\n"
            + r.table(("id", "type", "source", "received", "state"), rows))
    return Result(True, data, text)


async def show(ctx: Context, args: Mapping[str, Any]) -> Result:
    trace = await ctx.backend.trace(args["id"])
    if trace is None:
        raise CommandError(f"No event {r.code(args['id'], 40)}. `events` lists recent ones.")
    e = trace.event
    lines = [
        f"{r.bold('Event')} {r.code(e.id)}: {r.code(e.type)} from {r.code(e.source)}",
        f"received {iso(e.received_at)}, state {r.bold(e.state)}",
    ]
    if trace.tasks:
        lines.append(r.table(
            ("task", "try", "started", "ms", "outcome", "error"),
            [(t.task, t.attempt, iso(t.started_at), t.duration_ms, t.outcome, t.error or "")
             for t in trace.tasks],
        ))
    else:
        lines.append("No task attempts yet.")
    if trace.callbacks:
        lines.append(r.table(
            ("callback", "at", "status", "error"),
            [(c.attempt, iso(c.at), c.status, c.error or "") for c in trace.callbacks],
        ))
    return Result(True, jsonable(trace), "\n".join(lines))


def _replay_prompt(args: Mapping[str, Any]) -> str:
    what = f" of type {r.code(args['type'])}" if args.get("type") else ""
    return f"This processes again every event{what} received since {iso(args['since'])}."


def _replay_check(args: Mapping[str, Any]) -> None:
    since: datetime = args["since"]
    if since > datetime.now(UTC):
        raise UsageError(f"{iso(since)} is in the future; nothing to replay.")


async def replay(ctx: Context, args: Mapping[str, Any]) -> Result:
    since: datetime = args["since"]
    count = await ctx.backend.replay(since, args["type"])
    data = {"replayed": count, "since": iso(since), "type": args["type"]}
    return Result(True, data, f"Replaying {r.plural(count, 'event')} since {iso(since)}.")


async def feeds(ctx: Context, args: Mapping[str, Any]) -> Result:
    names = list(await ctx.backend.feeds())
    here = set(await ctx.backend.subscriptions(ctx.relay_target)) if ctx.relay_target else set()
    data = {"feeds": names, "subscribed": sorted(here & set(names))}
    if not names:
        return Result(True, data, "There are no feeds.")
    lines = [f"{r.code(n)}{' (relayed here)' if n in here else ''}" for n in names]
    return Result(True, data, r.bold("Feeds") + "\n" + "\n".join(lines))


async def subscribe(ctx: Context, args: Mapping[str, Any]) -> Result:
    if not ctx.relay_target:
        raise CommandError("There is no chat to relay a feed into from here.")
    feed = _pick(args["feed"], list(await ctx.backend.feeds()), "feed")
    data = {"feed": feed, "target": ctx.relay_target}
    if feed in await ctx.backend.subscriptions(ctx.relay_target):
        return Result(True, data, f"{r.code(feed)} is already relayed here.")
    await ctx.backend.subscribe(feed, ctx.relay_target)
    return Result(True, data, f"Relaying {r.code(feed)} here. `unsubscribe {feed}` stops it.")


async def unsubscribe(ctx: Context, args: Mapping[str, Any]) -> Result:
    if not ctx.relay_target:
        raise CommandError("There is no chat relaying feeds here.")
    feed = args["feed"]
    removed = await ctx.backend.unsubscribe(feed, ctx.relay_target)
    data = {"feed": feed, "target": ctx.relay_target, "removed": removed}
    if not removed:
        return Result(False, data, f"{r.code(feed)} was not relayed here.")
    return Result(True, data, f"Stopped relaying {r.code(feed)} here.")


def _first(found: Mapping[str, Any], *keys: str) -> Any:
    return next((found[k] for k in keys if found.get(k) is not None), None)


async def geocode(ctx: Context, args: Mapping[str, Any]) -> Result:
    address = args["address"]
    if len(address) > MAX_ADDRESS:
        raise UsageError(f"That address is {len(address)} characters; the limit is {MAX_ADDRESS}.")
    found = await ctx.backend.geocode(address)
    if found is None:
        return Result(False, {"query": address, "match": None},
                      f"No match for {r.code(address)}.")
    match = jsonable(dict(found))
    lat, lon = _first(match, "latitude", "lat"), _first(match, "longitude", "lon", "lng")
    label = _first(match, "address", "display_name", "name") or address
    lines = [f"{r.bold('Match')}: {r.code(label, 120)}"]
    if lat is not None and lon is not None:
        lines.append(f"{r.code(f'{lat}, {lon}')}  geo:{lat},{lon}")
    extra = [(k, v) for k, v in match.items()
             if k not in ("latitude", "lat", "longitude", "lon", "lng", "address",
                          "display_name", "raw") and not isinstance(v, dict | list)]
    if extra:
        lines.append(r.table(("field", "value"), extra))
    return Result(True, {"query": address, "match": match}, "\n".join(lines))


async def pause(ctx: Context, args: Mapping[str, Any]) -> Result:
    service = _pick(args["service"], list(await ctx.backend.services()), "service")
    await ctx.backend.pause(service)
    return Result(True, {"service": service, "paused": True},
                  f"Paused {r.code(service)}: its tasks wait until `resume {service}`.")


async def resume(ctx: Context, args: Mapping[str, Any]) -> Result:
    service = _pick(args["service"], list(await ctx.backend.services()), "service")
    await ctx.backend.resume(service)
    return Result(True, {"service": service, "paused": False}, f"Resumed {r.code(service)}.")


async def version(ctx: Context, args: Mapping[str, Any]) -> Result:
    v = await ctx.backend.version()
    return Result(True, {"version": v}, f"backchannel {r.code(v)}")


def _describe(command: Command) -> dict[str, Any]:
    return {
        "name": command.name, "usage": usage(command), "summary": command.summary,
        "role": command.role.label, "aliases": list(command.aliases),
        "confirm": command.confirm, "private_only": command.private_only,
        "arguments": [
            {"name": a.name, "kind": a.kind, "required": a.required, "flag": a.flag,
             "choices": list(a.choices), "help": a.help, "default": jsonable(a.default)}
            for a in command.arguments
        ],
    }


def _command_help(command: Command) -> str:
    lines = [r.code(usage(command), 200), command.summary]
    if command.help:
        lines += ["", command.help]
    described = [a for a in command.arguments if a.help]
    if described:
        lines.append("")
        lines += [f"{r.code(f'{a.option} {a.display}' if a.flag else a.display)}: {a.help}"
                  for a in described]
    notes = []
    if command.aliases:
        notes.append("Also: " + ", ".join(r.code(a) for a in command.aliases) + ".")
    if command.confirm:
        notes.append("Asks for confirmation.")
    if command.private_only:
        notes.append("Private chat only.")
    if notes:
        lines += ["", " ".join(notes)]
    return "\n".join(lines)


def _make_help(registry: Registry) -> Command:
    async def help_(ctx: Context, args: Mapping[str, Any]) -> Result:
        mine = registry.visible(ctx.role)
        topic = args["command"]
        if not topic:
            text = f"{r.bold('Commands you may run')} (role {ctx.role.label})\n" + "\n".join(
                f"{r.code(usage(c), 100)} - {c.summary}" for c in mine
            ) + "\n`help COMMAND` tells more."
            return Result(True, {"role": ctx.role.label,
                                 "commands": [_describe(c) for c in mine]}, text)
        group = registry.group(topic.split()[0])
        members = [c for c in registry.members(group) if c in mine] if group else []
        if group and members and len(topic.split()) == 1:
            text = f"{r.bold(group.name)}: {group.summary}\n" + "\n".join(
                f"{r.code(usage(c), 100)} - {c.summary}" for c in members
            )
            return Result(True, {"group": group.name,
                                 "commands": [_describe(c) for c in members]}, text)
        command = registry.get(topic)
        if command is not None and command in mine:
            return Result(True, {"command": _describe(command)}, _command_help(command))
        hint = did_you_mean(registry.suggest(topic.split()[:2], ctx.role))
        raise UsageError(f"No command {r.code(topic, 40)} you may run.{hint} Try `help`.")

    return Command(
        "help", "What you may run, or how to use one command", help_, aliases=("?",),
        arguments=(Argument("command", rest=True, metavar="COMMAND",
                            help="a command to explain"),),
        role=Role.NOBODY,
    )


def _make_whoami(registry: Registry) -> Command:
    async def whoami(ctx: Context, args: Mapping[str, Any]) -> Result:
        names = [c.name for c in registry.visible(ctx.role)]
        where = f"{ctx.where} {ctx.room}" if ctx.room else ctx.where
        text = (f"You are {r.code(ctx.caller)}, role {r.bold(ctx.role.label)}, in {where}.\n"
                f"You may run: {', '.join(r.code(n) for n in names)}.")
        data = {"jid": ctx.caller, "role": ctx.role.label, "where": ctx.where,
                "room": ctx.room, "commands": names}
        return Result(True, data, text)

    return Command("whoami", "Who the bot thinks you are and what you may run", whoami,
                   role=Role.NOBODY)


def system_commands() -> tuple[Command, ...]:
    """The built-in commands that do not need the registry."""
    viewer, operator = Role.VIEWER, Role.OPERATOR
    return (
        Command("status", "Connection, components, queues, breakers", status, role=viewer),
        Command("stats", "Throughput and task latencies over a window", stats, role=viewer,
                arguments=(Argument("window", "duration", default=300.0,
                                    help="how far back, e.g. 30s, 5m, 1h (default 5m)"),)),
        Command("events", "Recent events, newest first", events, role=viewer, arguments=(
            Argument("type", flag=True, metavar="GLOB", help="event type glob, e.g. user.*"),
            Argument("source", flag=True, metavar="S", help="only from this site"),
            Argument("last", "int", flag=True, default=10, minimum=1, metavar="N",
                     help=f"how many (default 10, at most {MAX_EVENTS})"),
        )),
        Command("show", "One event: its tasks, attempts and callbacks", show, role=viewer,
                aliases=("trace",), arguments=(Argument("id", required=True),)),
        Command("replay", "Process stored events again", replay, role=operator, confirm=True,
                prompt=_replay_prompt, check=_replay_check, arguments=(
                    Argument("since", "time", required=True, flag=True, metavar="TIME",
                             help="RFC 3339 time or a duration ago (1h, 30m)"),
                    Argument("type", flag=True, metavar="GLOB", help="only this type glob"),
                )),
        Command("feeds", "Live feeds, and which are relayed here", feeds, role=viewer),
        Command("subscribe", "Relay a live feed into this chat", subscribe, role=operator,
                arguments=(Argument("feed", required=True),)),
        Command("unsubscribe", "Stop relaying a feed here", unsubscribe, role=operator,
                arguments=(Argument("feed", required=True),)),
        Command("geocode", "Look an address up", geocode, role=viewer,
                arguments=(Argument("address", required=True, rest=True),)),
        Command("pause", "Hold an outside service's tasks", pause, role=operator,
                arguments=(Argument("service", required=True),)),
        Command("resume", "Let a paused service's tasks run again", resume, role=operator,
                arguments=(Argument("service", required=True),)),
        Command("version", "The running version", version, role=viewer),
    )


def builtin_registry() -> Registry:
    """A registry holding every built-in command."""
    registry = Registry(system_commands(), groups=(DEADLETTERS,))
    for command in deadletter_commands():
        registry.add(command)
    registry.add(_make_help(registry))
    registry.add(_make_whoami(registry))
    return registry
