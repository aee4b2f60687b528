"""The one way in: every front door (chat, XEP-0050 ad-hoc, CLI) calls :meth:`Dispatcher.run`.

Why one entry: access control, confirmation, rate limiting, timeouts and the audit trail
must not depend on which door a command came through. The order is fixed: rate limit,
clean and parse the line, look the command up, check the role (deny by default), check
private-only, then parse the arguments, ask for confirmation if needed, run.

Only :class:`~backchannel.errors.CommandError` subclasses leave :meth:`Dispatcher.run`:
``UsageError`` (bad input), ``PermissionDenied``, :class:`~commands.model.RateLimited`,
plain ``CommandError`` (expected failures, including our own errors from the backend),
and :class:`~commands.model.InternalCommandError` for bugs, logged here with a reference
the user can quote. Every attempt produces one :class:`~commands.model.AuditRecord`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backchannel.errors import (
    BackchannelError,
    CommandError,
    ConfigError,
    NotConnected,
    PermissionDenied,
    ServerError,
    StoreError,
    UsageError,
    XmppTimeout,
)
from commands.model import (
    Argument,
    AuditRecord,
    Command,
    Context,
    InternalCommandError,
    Lazy,
    Outcome,
    RateLimited,
    Result,
    Role,
)
from commands.parse import MAX_LINE, clean_line, coerce, parse_line, tokenize, words_of
from commands.registry import Confirmations, Registry, did_you_mean
from commands.render import code, one_line, shorten
from commands.views import jsonable

log = logging.getLogger(__name__)

DENIED = "You may not run that. `help` lists what you can."
AuditHook = Callable[[AuditRecord], None]


def log_audit(record: AuditRecord) -> None:
    """The default audit hook: one INFO line per attempt."""
    log.info(
        "command %r by %s in %s%s: %s (%s) %.1f ms %s",
        record.command, record.who, record.where,
        f" {record.room}" if record.room else "", record.outcome, record.args,
        record.duration_ms, record.detail,
    )


async def _refuse(ctx: Context, args: Mapping[str, Any]) -> Result:
    raise CommandError("confirm is handled by the dispatcher")


CONFIRM = Command(
    "confirm",
    "Confirm a command that asked for it",
    _refuse,
    arguments=(Argument("token", required=True, help="the token the bot gave you"),),
    role=Role.NOBODY,
    hidden=True,
)


@dataclass
class _Attempt:
    """What is known so far about one attempt, for its audit record."""

    started: float
    command: str = "?"
    args: str = ""
    detail: str = ""


@dataclass
class _Bucket:
    tokens: float
    at: float
    warned: bool = False


class RateLimiter:
    """A token bucket per caller: ``per_minute`` commands, refilled continuously."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, who: str) -> None:
        now = self._clock()
        bucket = self._buckets.get(who)
        if bucket is None:
            if len(self._buckets) > 10000:
                self._forget_idle(now)
            bucket = self._buckets[who] = _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.warned = False
            return
        wait = (1.0 - bucket.tokens) / self.rate
        error = RateLimited(
            f"Slow down: at most {int(self.capacity)} commands a minute."
            f" Try again in {max(1, round(wait))} s.",
            retry_after=wait,
            repeated=bucket.warned,
        )
        bucket.warned = True
        raise error

    def _forget_idle(self, now: float) -> None:
        for who, b in list(self._buckets.items()):
            if b.tokens + (now - b.at) * self.rate >= self.capacity:
                del self._buckets[who]


def summarize(command: Command, args: Mapping[str, Any], limit: int = 200) -> str:
    """``type='user.*', last=10``: short, one line, secrets masked."""
    secret = {a.name for a in command.arguments if a.secret}
    parts = []
    for key, value in args.items():
        if value is None:
            continue
        shown = "***" if key in secret else shorten(one_line(str(jsonable(value))), 40)
        parts.append(f"{key}={shown!r}" if isinstance(value, str) else f"{key}={shown}")
    return shorten(", ".join(parts), limit)


class Dispatcher:
    """Runs commands from any front door with the same checks, limits and audit."""

    def __init__(
        self,
        registry: Registry,
        *,
        audit: AuditHook | None = log_audit,
        rate_per_minute: int | None = 30,
        confirm_ttl: float = 60.0,
        timeout: float | None = 30.0,
        max_line: int = MAX_LINE,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.registry = registry
        if registry.get("confirm") is None:
            registry.add(CONFIRM)
        self.confirmations = Confirmations(confirm_ttl, clock=clock)
        self.limiter = RateLimiter(rate_per_minute, clock=clock) if rate_per_minute else None
        self.timeout = timeout
        self.max_line = max_line
        self.counts: Counter[str] = Counter()
        self._audit = audit
        self._clock = clock
        self._now = now

    def visible(self, role: Role) -> list[Command]:
        """What ``role`` may run: for help listings and ad-hoc command discovery."""
        return self.registry.visible(role)

    async def run(
        self,
        line_or_name: str,
        args: Mapping[str, Any] | None,
        ctx: Context,
        *,
        assume_yes: bool = False,
    ) -> Result:
        """Run a chat line (``args`` None) or a named command with named ``args``.

        ``assume_yes`` skips the confirmation question (the CLI's ``--yes``); a chat front
        door must never set it.
        """
        attempt = _Attempt(self._clock())
        try:
            if self.limiter is not None:
                self.limiter.take(ctx.caller)
            if args is None:
                command, parsed = self._from_line(line_or_name, ctx, attempt)
            else:
                command, parsed = self._from_args(line_or_name, args, ctx, attempt)
            attempt.args = summarize(command, parsed)
            if command.check is not None:
                command.check(parsed)
            if command is CONFIRM:
                pending = self.confirmations.take(str(parsed["token"]), ctx)
                command, parsed = pending.command, dict(pending.args)
                attempt.command, attempt.args = command.name, summarize(command, parsed)
                attempt.detail = "confirmed"
                self._check_access(command, ctx)  # the role may have changed meanwhile
            elif command.confirm and not assume_yes:
                return self._ask(command, parsed, ctx, attempt)
            result = await self._execute(command, parsed, ctx)
        except RateLimited as exc:
            self._record(ctx, attempt, "ratelimited", str(exc))
            raise
        except PermissionDenied as exc:
            self._record(ctx, attempt, "denied", str(exc))
            raise
        except UsageError as exc:
            self._record(ctx, attempt, "usage", str(exc))
            raise
        except CommandError as exc:
            self._record(ctx, attempt, "error", str(exc))
            raise
        if not result.ok:
            attempt.detail = attempt.detail or "negative result"
        self._record(ctx, attempt, "ok" if result.ok else "error", attempt.detail)
        return result

    def _from_line(
        self, text: str, ctx: Context, attempt: _Attempt
    ) -> tuple[Command, dict[str, Any]]:
        line = clean_line(text, limit=self.max_line)
        tokens = tokenize(line)
        if tokens.items:
            attempt.command = shorten(tokens.items[0].text, 32)
        command, used = self._resolve(words_of(tokens.items, self.registry.max_words), ctx)
        attempt.command = command.name
        self._check_access(command, ctx)
        if not any(a.secret for a in command.arguments):  # until parsed, the raw words
            attempt.args = shorten(one_line(" ".join(t.text for t in tokens.items[used:])), 120)
        return command, parse_line(command, line, tokens, used, self._now())

    def _from_args(
        self, name: str, args: Mapping[str, Any], ctx: Context, attempt: _Attempt
    ) -> tuple[Command, dict[str, Any]]:
        name = clean_line(name, limit=200)
        attempt.command = shorten(name, 32) or "?"
        command = self.registry.get(name)
        if command is None:
            raise self._unknown(name.split()[:2], ctx)
        attempt.command = command.name
        self._check_access(command, ctx)
        return command, coerce(command, args, self._now())

    # -- steps -------------------------------------------------------------------------

    def _unknown(self, typed: list[str], ctx: Context) -> UsageError:
        shown = " ".join(typed)
        hint = did_you_mean(self.registry.suggest(typed, ctx.role))
        return UsageError(f"Unknown command {code(shown, 40)}.{hint} Try `help`.")

    def _resolve(self, words: list[str], ctx: Context) -> tuple[Command, int]:
        if not words:
            raise UsageError("Say `help` to see what I can do.")
        found = self.registry.resolve(words)
        group = self.registry.group(words[0])
        if group is not None and (found is None or (found[1] == 1 and len(words) > 1)):
            members = [c for c in self.registry.members(group) if not c.hidden]
            mine = [c for c in members if self.registry.allowed(c, ctx.role)]
            if not mine:
                raise PermissionDenied(DENIED)
            if len(words) == 1:
                names = ", ".join(code(" ".join(c.words[1:])) for c in mine if len(c.words) > 1)
                raise UsageError(f"{code(group.name)} needs a subcommand: {names}.")
            if len(words) > 1 and not words[1].startswith(("--", "—", "–")):  # noqa: RUF001
                hint = did_you_mean(self.registry.suggest(words[:2], ctx.role))
                raise UsageError(
                    f"{code(group.name)} has no subcommand {code(words[1], 40)}.{hint}"
                    f" Try `help {group.name}`."
                )
        if found is None:
            raise self._unknown(words[:1], ctx)
        return found

    def _check_access(self, command: Command, ctx: Context) -> None:
        if not self.registry.allowed(command, ctx.role):
            raise PermissionDenied(DENIED)
        if command.private_only and ctx.where == "groupchat":
            raise PermissionDenied(
                f"{code(command.name)} only works in a private chat with me, not in a room."
            )

    def _ask(
        self, command: Command, args: Mapping[str, Any], ctx: Context, attempt: _Attempt
    ) -> Result:
        pending = self.confirmations.issue(command, args, ctx)
        what = command.prompt(args) if command.prompt else f"This runs {code(command.name)}."
        ttl = round(self.confirmations.ttl)
        text = f"{what}\nReply `confirm {pending.token}` within {ttl} s to go ahead."
        self._record(ctx, attempt, "pending", f"token issued, {ttl} s")
        data = {"confirm": pending.token, "command": command.name, "expires_in_s": ttl,
                "args": jsonable(args)}
        return Result(ok=True, data=data, text=text, confirm_token=pending.token)

    async def _execute(self, command: Command, args: Mapping[str, Any], ctx: Context) -> Result:
        timer = asyncio.timeout(self.timeout)
        try:
            async with timer:
                result = await command.handler(ctx, args)
        except CommandError:
            raise
        except NotConnected as exc:
            raise CommandError(
                "I am not connected to the XMPP server right now; try again in a moment."
            ) from exc
        except XmppTimeout as exc:
            raise CommandError("The XMPP server did not answer in time; try again.") from exc
        except TimeoutError as exc:
            if not timer.expired():
                raise self._bug(command, exc) from exc
            raise CommandError(
                f"{code(command.name)} took longer than {self.timeout:.0f} s and was stopped."
            ) from exc
        except (StoreError, ConfigError, ServerError) as exc:
            ref = _ref()
            log.warning("command %s failed, ref %s: %r", command.name, ref, exc)
            raise CommandError(f"{code(command.name)} failed; logged as {ref}.") from exc
        except BackchannelError as exc:
            log.info("command %s failed: %r", command.name, exc)
            raise CommandError(f"{code(command.name)} failed: {shorten(str(exc), 200)}") from exc
        except Exception as exc:
            raise self._bug(command, exc) from exc
        try:
            if not isinstance(result, Result):
                raise TypeError(f"handler returned {type(result).__name__}, not Result")
            if not isinstance(result.data, Lazy):  # Lazy data is checked where it is made
                json.dumps(result.data)
        except (TypeError, ValueError) as exc:
            raise self._bug(command, exc) from exc
        return result

    def _bug(self, command: Command, exc: BaseException) -> InternalCommandError:
        ref = _ref()
        log.error("command %s crashed, ref %s", command.name, ref, exc_info=exc)
        return InternalCommandError(ref)

    def _record(self, ctx: Context, attempt: _Attempt, outcome: Outcome, detail: str) -> None:
        self.counts[outcome] += 1
        if self._audit is None:
            return
        record = AuditRecord(
            at=self._now(), who=ctx.caller, where=ctx.where, room=ctx.room,
            command=attempt.command, args=attempt.args, outcome=outcome,
            detail=shorten(one_line(detail), 200),
            duration_ms=(self._clock() - attempt.started) * 1000.0,
        )
        try:
            self._audit(record)
        except Exception:
            self.counts["audit_failed"] += 1
            log.exception("audit hook failed for %s", attempt.command)


def _ref() -> str:
    return "E" + secrets.token_hex(4).upper()
