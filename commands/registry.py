"""Where commands are found: by name or alias, filtered by role, with typo suggestions.

Why phrases: a group such as ``deadletters`` has subcommands with their own role and
confirmation (``deadletters list`` is for viewers, ``deadletters purge`` for admins, in
private, after confirmation). Each subcommand is an ordinary :class:`Command` whose name
has several words; lookup takes the longest name that prefixes the line, so
``deadletters retry all`` and ``deadletters retry ID`` are two commands. A group's first
word may have aliases (``dl``).

:class:`Confirmations` holds the pending "reply ``confirm TOKEN``" questions: a token is
bound to the caller and the conversation, expires, and is used at most once.
"""

from __future__ import annotations

import difflib
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backchannel.errors import CommandError
from commands.model import Command, Context, Role
from commands.render import code


def _phrase(text: str) -> tuple[str, ...]:
    return tuple(text.casefold().split())


@dataclass(frozen=True)
class Group:
    name: str
    summary: str
    aliases: tuple[str, ...] = ()


class Registry:
    """Commands by phrase (name and aliases), plus groups of subcommands."""

    def __init__(self, commands: Iterable[Command] = (), groups: Iterable[Group] = ()) -> None:
        self._by_phrase: dict[tuple[str, ...], Command] = {}
        self._max_words = 1
        self._commands: list[Command] = []
        self._groups: dict[str, Group] = {}
        self._group_alias: dict[str, str] = {}
        for group in groups:
            self.add_group(group)
        for command in commands:
            self.add(command)

    def add_group(self, group: Group) -> Group:
        for word in (group.name, *group.aliases):
            if " " in word.strip() or word.casefold() in self._group_alias:
                raise ValueError(f"bad or duplicate group word {word!r}")
            self._group_alias[word.casefold()] = group.name.casefold()
        self._groups[group.name.casefold()] = group
        return group

    def add(self, command: Command) -> Command:
        phrases = [_phrase(p) for p in (command.name, *command.aliases)]
        for phrase in phrases:
            if not phrase or phrase in self._by_phrase:
                raise ValueError(f"empty or duplicate command name {' '.join(phrase)!r}")
        for phrase in phrases:
            self._by_phrase[phrase] = command
            self._max_words = max(self._max_words, len(phrase))
        self._commands.append(command)
        return command

    def __iter__(self) -> Iterator[Command]:
        return iter(sorted(self._commands, key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._commands)

    def get(self, name: str) -> Command | None:
        """The command named (or aliased) exactly ``name``."""
        words = list(_phrase(name))
        if words and words[0] in self._group_alias:
            words[0] = self._group_alias[words[0]]
        return self._by_phrase.get(tuple(words))

    def resolve(self, words: Sequence[str]) -> tuple[Command, int] | None:
        """The command whose name is the longest prefix of ``words``, and its word count."""
        canon = [w.casefold() for w in words]
        if canon and canon[0] in self._group_alias:
            canon[0] = self._group_alias[canon[0]]
        for size in range(min(len(canon), self.max_words), 0, -1):
            command = self._by_phrase.get(tuple(canon[:size]))
            if command is not None:
                return command, size
        return None

    @property
    def max_words(self) -> int:
        """Words in the longest command name (kept up to date by ``add``)."""
        return self._max_words

    def group(self, word: str) -> Group | None:
        """The group ``word`` names (or aliases)."""
        name = self._group_alias.get(word.casefold())
        return self._groups.get(name) if name else None

    def members(self, group: Group) -> list[Command]:
        head = group.name.casefold()
        return [c for c in self if c.words[0].casefold() == head]

    @staticmethod
    def allowed(command: Command, role: Role) -> bool:
        return role >= command.role

    def visible(self, role: Role) -> list[Command]:
        """What ``role`` may run and see listed, by name."""
        return [c for c in self if not c.hidden and self.allowed(c, role)]

    def suggest(self, typed: Sequence[str], role: Role) -> list[str]:
        """Up to two visible phrases close to ``typed`` (one or two words), best first."""
        typed = [w.casefold() for w in typed]
        if len(typed) > 1:  # a subcommand: compare the second word among the group's
            head = self._group_alias.get(typed[0], typed[0])
            group = self._groups.get(head)
            subs = {c.words[1] for c in self.members(group) if len(c.words) > 1
                    and self.allowed(c, role) and not c.hidden} if group else set()
            subs.discard(typed[1])
            near = difflib.get_close_matches(typed[1], sorted(subs), n=2, cutoff=0.7)
            return [f"{head} {w}" for w in near]
        candidates: set[str] = set()
        for command in self.visible(role):
            candidates.update(_phrase(p)[0] for p in (command.name, *command.aliases))
        for name, group in self._groups.items():
            if any(self.allowed(c, role) and not c.hidden for c in self.members(group)):
                candidates.update(a.casefold() for a in group.aliases)
                candidates.add(name)
        candidates.discard(typed[0] if typed else "")
        return difflib.get_close_matches(
            typed[0] if typed else "", sorted(candidates), n=2, cutoff=0.7
        )

def did_you_mean(near: Sequence[str]) -> str:
    """`` Did you mean `a` or `b`?`` (with a leading space), or "" without suggestions."""
    if not near:
        return ""
    return " Did you mean " + " or ".join(code(n) for n in near) + "?"


@dataclass(frozen=True)
class Pending:
    """A command waiting for ``confirm TOKEN`` from the same caller in the same place."""

    token: str
    command: Command
    args: Mapping[str, Any]
    caller: str
    conversation: tuple[str, str]
    expires: float


class Confirmations:
    """Single-use, expiring confirmation tokens bound to a caller and a conversation."""

    def __init__(
        self,
        ttl: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_per_caller: int = 5,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self._clock = clock
        self._max = max_per_caller
        self._pending: dict[str, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def issue(self, command: Command, args: Mapping[str, Any], ctx: Context) -> Pending:
        now = self._clock()
        # forget long-expired tokens; keep recently expired ones to say "expired"
        for token, p in list(self._pending.items()):
            if now > p.expires + self.ttl:
                del self._pending[token]
        mine = [p for p in self._pending.values() if p.caller == ctx.caller]
        for old in sorted(mine, key=lambda p: p.expires)[: max(0, len(mine) - self._max + 1)]:
            del self._pending[old.token]
        token = secrets.token_hex(4)
        while token in self._pending:
            token = secrets.token_hex(4)
        pending = Pending(token, command, dict(args), ctx.caller, ctx.conversation, now + self.ttl)
        self._pending[token] = pending
        return pending

    def take(self, token: str, ctx: Context) -> Pending:
        """The pending command for ``token``, removed; CommandError if not this caller's."""
        key = token.strip().casefold()
        pending = self._pending.get(key)
        mine = pending is not None and (pending.caller, pending.conversation) == (
            ctx.caller, ctx.conversation
        )
        if pending is None or not mine:
            raise CommandError(
                f"There is nothing waiting for {code('confirm ' + key, 40)} from you here."
                " Run the command again."
            )
        del self._pending[key]
        if self._clock() > pending.expires:
            raise CommandError(
                f"That confirmation expired after {self.ttl:.0f} s; run"
                f" `{pending.command.name}` again."
            )
        return pending
