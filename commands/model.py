"""What an operator command is, independent of how it is reached.

Why: the chat bot, XEP-0050 ad-hoc commands and the CLI are three front doors onto one
set of definitions. A :class:`Command` declares its arguments once (the chat parser, the
ad-hoc form builder and the CLI all read the same :class:`Argument` schema), the
:class:`Role` it needs, whether it needs confirmation and whether it is private-chat
only. The handler gets a :class:`Context` (who, where, the backend) and the parsed
arguments and returns a :class:`Result`: structured ``data`` plus a XEP-0393 ``text``.

Expected failures are :class:`~backchannel.errors.CommandError` subclasses whose
message goes to the user; the two extra ones below let front doors tell a throttled or
crashed command from the others (exit codes, whether to answer at all).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from backchannel.errors import CommandError

if TYPE_CHECKING:
    from commands.backend import OperatorBackend

ArgKind = Literal["str", "int", "duration", "time", "choice"]
Where = Literal["chat", "groupchat", "adhoc", "cli"]
Outcome = Literal["ok", "denied", "error", "usage", "ratelimited", "pending"]

ARG_KINDS: frozenset[str] = frozenset({"str", "int", "duration", "time", "choice"})
WHERES: frozenset[str] = frozenset({"chat", "groupchat", "adhoc", "cli"})


class RateLimited(CommandError):
    """The caller sent too many commands; ``retry_after`` is in seconds.

    ``repeated`` is True when the caller was already told since their last accepted
    command: a chat front door can stay quiet instead of answering a flood with a flood.
    """

    def __init__(self, message: str, *, retry_after: float, repeated: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.repeated = repeated


class InternalCommandError(CommandError):
    """A command crashed (a bug). The message only carries ``ref``, found in the log."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"internal error, logged as {ref}")
        self.ref = ref


class Role(enum.IntEnum):
    """Ordered: a caller may run a command when ``caller.role >= command.role``."""

    NOBODY = 0
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def from_name(cls, name: str) -> Role:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


def bare_jid(jid: str) -> str:
    """``User@Example.com/phone`` -> ``user@example.com`` (resource dropped, case folded)."""
    return jid.split("/", 1)[0].strip().lower()


def role_of(jid: str, roles: Mapping[str, str | Role]) -> Role:
    """The role bound to a real (bare) JID; anyone not listed is :attr:`Role.NOBODY`.

    Pass the sender's *real* JID, never a room occupant JID (``room@muc/nick``): the bare
    part of an occupant JID is the room, which must not inherit anybody's role.
    """
    value = roles.get(bare_jid(jid))
    if value is None:
        return Role.NOBODY
    return value if isinstance(value, Role) else Role.from_name(value)


@dataclass(frozen=True)
class Argument:
    """One declared argument.

    ``flag`` arguments are given as ``--name VALUE`` (or ``--name=VALUE``); the others are
    positional, in declaration order. A ``rest`` argument is positional and takes the rest
    of the line verbatim (quotes included), e.g. an address. ``minimum`` applies to ints.
    ``secret`` values are masked in audit records.
    """

    name: str
    kind: ArgKind = "str"
    required: bool = False
    choices: tuple[str, ...] = ()
    help: str = ""
    flag: bool = False
    default: Any = None
    rest: bool = False
    metavar: str = ""
    minimum: int | None = None
    secret: bool = False

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"argument name must be an identifier: {self.name!r}")
        if self.kind not in ARG_KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"{self.name}: a choice argument needs choices")
        if self.rest and self.flag:
            raise ValueError(f"{self.name}: a flag cannot take the rest of the line")

    @property
    def option(self) -> str:
        """The flag as typed: ``--type``, ``--last``."""
        return "--" + self.name.replace("_", "-")

    @property
    def display(self) -> str:
        """How the value is shown in a usage line: ``GLOB``, ``N``, ``list|show``."""
        if self.metavar:
            return self.metavar
        if self.kind == "choice":
            return "|".join(self.choices)
        return self.name.upper() + ("..." if self.rest else "")


@dataclass(frozen=True)
class Context:
    """Who runs a command, from where, against what.

    ``caller`` is the real bare JID (or a local user name for the CLI). ``relay_target``
    is the chat or room a ``subscribe`` relays into ("" where there is none).
    """

    caller: str
    role: Role
    where: Where
    backend: OperatorBackend
    room: str | None = None
    relay_target: str = ""

    def __post_init__(self) -> None:
        if self.where not in WHERES:
            raise ValueError(f"unknown where {self.where!r}")

    @property
    def conversation(self) -> tuple[str, str]:
        """The conversation a reply belongs to (confirmations must come from the same one)."""
        return (self.where, self.room or "")


class Lazy:
    """Result data made on first use: ``Result(True, Lazy(lambda: jsonable(view)), text)``.

    Why: the chat door only sends ``text``; building the structured copy of a view for
    every chat command cost about a fifth of the bot's time per ``status``. The ad-hoc
    door (and through it the CLI's ``--json``) asks for it with :meth:`Result.json`.
    """

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


@dataclass
class Result:
    """What a command answers: ``data`` is JSON-able, ``text`` is XEP-0393 styled.

    ``ok`` is False when the command ran but the answer is negative (no geocoding match).
    ``confirm_token`` is set when the command is waiting for ``confirm TOKEN``.
    ``data`` may be a :class:`Lazy`; read it through :meth:`json`.
    """

    ok: bool
    data: Any
    text: str
    confirm_token: str | None = None

    def json(self) -> Any:
        """The JSON-able data (made now if it was :class:`Lazy`)."""
        if isinstance(self.data, Lazy):
            self.data = self.data.make()
        return self.data


Handler = Callable[[Context, Mapping[str, Any]], Awaitable[Result]]


@dataclass(frozen=True)
class Command:
    """One operator command.

    ``name`` may have several words (``deadletters retry all``): a group's subcommands are
    commands whose names share the first word. ``aliases`` are other full phrases for the
    same command. ``prompt`` describes, for the confirmation question, what will happen;
    ``check`` validates the arguments together (raising UsageError) before anything runs
    or is confirmed.
    The default ``role`` is ADMIN: a command nobody thought about is denied to most.
    """

    name: str
    summary: str
    handler: Handler
    aliases: tuple[str, ...] = ()
    help: str = ""
    arguments: tuple[Argument, ...] = ()
    role: Role = Role.ADMIN
    confirm: bool = False
    private_only: bool = False
    hidden: bool = False
    prompt: Callable[[Mapping[str, Any]], str] | None = None
    check: Callable[[Mapping[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        names = [a.name for a in self.arguments]
        if len(names) != len(set(names)):
            raise ValueError(f"{self.name}: duplicate argument names")
        positionals = [a for a in self.arguments if not a.flag]
        if any(a.rest for a in positionals[:-1]):
            raise ValueError(f"{self.name}: a rest argument must be the last positional")

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.name.split())

    @property
    def positionals(self) -> tuple[Argument, ...]:
        return tuple(a for a in self.arguments if not a.flag)

    @property
    def flags(self) -> tuple[Argument, ...]:
        return tuple(a for a in self.arguments if a.flag)


@dataclass(frozen=True)
class AuditRecord:
    """One command attempt, whatever came of it. ``args`` is a short, masked summary."""

    at: datetime
    who: str
    where: Where
    room: str | None
    command: str
    args: str
    outcome: Outcome
    detail: str = ""
    duration_ms: float = 0.0
