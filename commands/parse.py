"""From a chat line (or a form's fields) to checked, typed arguments.

Why hand-written and forgiving: chat lines come from phones and from strangers. Phones
turn ``"`` into ``“”`` and ``--`` into ``—``; people type ``O'Brien St`` without meaning a
quote; anyone can paste 1 MB, a NUL, or right-to-left overrides. So:

- :func:`clean_line` caps the length (:data:`MAX_LINE`), refuses control characters,
  drops invisible format characters (bidi marks, zero-width), normalizes to NFC and caps
  runs of combining marks;
- :func:`tokenize` is shlex-like (quotes, backslashes) but never raises: a quote only
  opens at the start of a word (or after ``=``), and an unclosed quote is reported back,
  so a ``rest`` argument such as an address can still take the raw text;
- :func:`parse_line` and :func:`coerce` check values against the command's
  :class:`~commands.model.Argument` schema and raise
  :class:`~backchannel.errors.UsageError` with the usage line. Nothing else escapes.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from backchannel.errors import UsageError
from commands.model import Argument, Command
from commands.render import code

MAX_LINE = 4096
MAX_COMBINING = 4
MAX_DURATION_S = 366 * 86400.0

QUOTES = {'"': '"', "'": "'", "“": "”“", "‘": "’‘", "„": "“”", "«": "»"}  # noqa: RUF001
DOUBLE_QUOTES = frozenset('"“„«')
DASHES = ("—", "–")  # noqa: RUF001  phones turn -- into an em or en dash
INT_RE = re.compile(r"^[+-]?[0-9]{1,12}$")
DURATION_PART_RE = re.compile(r"\s*([0-9]{1,9}(?:\.[0-9]{1,6})?)\s*([a-z]*)")
UNITS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}


@dataclass(frozen=True)
class Token:
    """A word of the line: its unquoted ``text`` and where it sat (``start``/``end``)."""

    text: str
    start: int
    end: int
    quoted: bool = False


@dataclass(frozen=True)
class Tokens:
    items: tuple[Token, ...]
    unclosed_quote: int | None = None  # offset of a quote that was never closed


def clean_line(line: str, *, limit: int = MAX_LINE) -> str:
    """``line`` made safe to parse and to echo, or a UsageError that says why not."""
    if len(line) > limit:
        raise UsageError(
            f"That message is {len(line)} characters long; commands are limited to {limit}."
        )
    for i, ch in enumerate(line):
        cat = unicodedata.category(ch)
        if (cat == "Cc" and ch not in "\t\n\r") or cat == "Cs":
            raise UsageError(
                f"Control characters are not accepted (U+{ord(ch):04X} at position {i + 1})."
            )
    text = unicodedata.normalize("NFC", line)
    out: list[str] = []
    marks = 0
    for ch in text:
        if unicodedata.category(ch) == "Cf":
            continue  # bidi overrides, zero-width spaces and joiners, BOM, soft hyphen
        if unicodedata.combining(ch):
            marks += 1
            if marks > MAX_COMBINING:
                continue
        else:
            marks = 0
        out.append(ch)
    return "".join(out).strip()


def tokenize(line: str) -> Tokens:
    """Split ``line`` into words. Never raises; see the module docstring for the rules."""
    items: list[Token] = []
    unclosed: int | None = None
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            break
        start, buf, quoted = i, [], False
        while i < n and not line[i].isspace():
            ch = line[i]
            if ch in QUOTES and (i == start or line[i - 1] == "="):
                closers, double = QUOTES[ch], ch in DOUBLE_QUOTES
                j = i + 1
                while j < n and line[j] not in closers:
                    if double and line[j] == "\\" and j + 1 < n and line[j + 1] in '"\\':
                        j += 1
                    buf.append(line[j])
                    j += 1
                quoted = True
                if j >= n:
                    unclosed = i
                    i = n
                    break
                i = j + 1
                continue
            if ch == "\\" and i + 1 < n:
                buf.append(line[i + 1])
                i += 2
                continue
            buf.append(ch)
            i += 1
        items.append(Token("".join(buf), start, i, quoted))
    return Tokens(tuple(items), unclosed)


def usage(command: Command) -> str:
    """``events [--type GLOB] [--source S] [--last N]``."""
    parts = [command.name]
    for arg in command.arguments:
        word = f"{arg.option} {arg.display}" if arg.flag else arg.display
        parts.append(word if arg.required else f"[{word}]")
    return " ".join(parts)


def _usage_error(command: Command, message: str) -> UsageError:
    return UsageError(f"{message} Usage: `{usage(command)}`")


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``5m``, ``1h30m``, ``2 days`` -> seconds. ValueError otherwise."""
    value = text.strip().lower()
    if not value or len(value) > 40:
        raise ValueError(text)
    total, pos, parts = 0.0, 0, 0
    while pos < len(value):
        m = DURATION_PART_RE.match(value, pos)
        if not m or m.end() == pos or m.group(2) not in UNITS:
            raise ValueError(text)
        if not m.group(2) and (parts or m.end() < len(value)):
            raise ValueError(text)  # a bare number only on its own
        total += float(m.group(1)) * UNITS[m.group(2)]
        parts += 1
        pos = m.end()
    return total


def parse_time(text: str, now: datetime) -> datetime:
    """RFC 3339 (naive means UTC), ``now``, or a duration ago (``1h``, ``-30m``, ``2d ago``)."""
    value = text.strip()
    lowered = value.lower()
    if lowered == "now":
        return now
    relative = lowered.removesuffix("ago").strip().removeprefix("-")
    if not relative.replace(".", "").isdigit():  # "2026" is a year, not 2026 s ago
        try:
            return now - timedelta(seconds=min(parse_duration(relative), MAX_DURATION_S * 10))
        except ValueError:
            pass
    try:
        when = datetime.fromisoformat(value.upper() if "t" in value or "z" in value else value)
    except ValueError:
        raise ValueError(text) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def convert(arg: Argument, value: Any, now: datetime) -> Any:
    """``value`` (text from a line or a form, or an already typed value) checked for ``arg``."""
    label = arg.option if arg.flag else arg.display
    if isinstance(value, str):
        value = clean_line(value)
        if not value:
            raise UsageError(f"{label} must not be empty.")
    if arg.kind == "str":
        if not isinstance(value, str):
            raise UsageError(f"{label} must be text.")
        return value
    if arg.kind == "int":
        if isinstance(value, str) and INT_RE.match(value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"{label} must be a whole number, not {code(value, 30)}.")
        if arg.minimum is not None and value < arg.minimum:
            raise UsageError(f"{label} must be at least {arg.minimum}.")
        return value
    if arg.kind == "duration":
        try:
            seconds = parse_duration(value) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise UsageError(
                f"{label} must be a duration like 30s, 5m or 1h, not {code(value, 30)}."
            ) from None
        if not 0 < seconds <= MAX_DURATION_S:
            raise UsageError(f"{label} must be more than 0 and at most 366 days.")
        return seconds
    if arg.kind == "time":
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value
        try:
            return parse_time(str(value), now)
        except (ValueError, OverflowError):
            raise UsageError(
                f"{label} must be a time: RFC 3339 (2026-12-04T15:00:00Z) or a duration"
                f" ago (1h, 30m), not {code(value, 40)}."
            ) from None
    # choice
    folded = {c.casefold(): c for c in arg.choices}
    choice = folded.get(str(value).casefold())
    if choice is None:
        near = difflib.get_close_matches(str(value).casefold(), list(folded), n=1)
        hint = f" Did you mean {code(folded[near[0]])}?" if near else ""
        raise UsageError(
            f"{label} must be one of {', '.join(arg.choices)}, not {code(value, 30)}.{hint}"
        )
    return choice


def _finish(command: Command, args: dict[str, Any]) -> dict[str, Any]:
    for arg in command.arguments:
        if arg.name not in args:
            if arg.required:
                what = f"{arg.option} {arg.display}" if arg.flag else arg.display
                raise _usage_error(command, f"Missing {what}.")
            args[arg.name] = arg.default
    return args


def _undash(text: str) -> str:
    for dash in DASHES:
        if text.startswith(dash):
            return "--" + text[len(dash) :]
    return text


def parse_line(
    command: Command, line: str, tokens: Tokens, skip: int, now: datetime
) -> dict[str, Any]:
    """Arguments of ``command`` from ``tokens[skip:]`` (the words after its name)."""
    args: dict[str, Any] = {}
    options = {a.option: a for a in command.flags}
    positionals = list(command.positionals)
    items = tokens.items
    rest_from: int | None = None
    only_positional = False
    i = skip
    while i < len(items):
        tok = items[i]
        text = tok.text if tok.quoted or only_positional else _undash(tok.text)
        if not tok.quoted and not only_positional and text == "--":
            only_positional = True
            i += 1
            continue
        if not tok.quoted and not only_positional and text.startswith("--") and len(text) > 2:
            name, eq, value = text.partition("=")
            arg = options.get(name.lower())
            if arg is None:
                near = difflib.get_close_matches(name.lower(), list(options), n=1)
                hint = f" Did you mean {code(near[0])}?" if near else ""
                raise _usage_error(command, f"Unknown option {code(name, 40)}.{hint}")
            if arg.name in args:
                raise _usage_error(command, f"{arg.option} is given twice.")
            if not eq:
                if i + 1 >= len(items):
                    raise _usage_error(command, f"{arg.option} needs a value ({arg.display}).")
                i += 1
                value = items[i].text
            args[arg.name] = convert(arg, value, now)
            i += 1
            continue
        if not positionals:
            raise _usage_error(command, f"Unexpected {code(tok.text, 40)}.")
        arg = positionals.pop(0)
        if arg.rest:
            remaining = items[i:]
            if len(remaining) == 1 and tok.quoted and tokens.unclosed_quote is None:
                raw = tok.text  # one quoted phrase: drop the quotes
            else:
                raw = line[tok.start :]
            rest_from = tok.start
            args[arg.name] = convert(arg, " ".join(raw.split()), now)
            break
        args[arg.name] = convert(arg, tok.text, now)
        i += 1
    unclosed = tokens.unclosed_quote
    if unclosed is not None and (rest_from is None or unclosed < rest_from):
        raise _usage_error(
            command, f"A quote opened at position {unclosed + 1} is never closed."
        )
    return _finish(command, args)


def coerce(command: Command, values: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Arguments of ``command`` from named values (an ad-hoc form, the CLI)."""
    known = {a.name: a for a in command.arguments}
    args: dict[str, Any] = {}
    for key, value in values.items():
        arg = known.get(key)
        if arg is None:
            raise _usage_error(command, f"Unknown argument {code(key, 40)}.")
        if value is None or value == "":
            continue
        args[key] = convert(arg, value, now)
    return _finish(command, args)


def words_of(tokens: Sequence[Token], count: int) -> list[str]:
    """The first ``count`` words, case-folded (command names are case-blind)."""
    return [tok.text.casefold() for tok in tokens[:count]]
