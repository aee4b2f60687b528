"""XEP-0393 message styling for replies that every Jabber client can show.

Why plain styled text: XHTML-IM is deprecated and support is spotty; a ``<body>`` with
``*bold*``, ``` `code` ``` and ``` blocks reads fine in clients that style it and in
those that do not. XEP-0393 has no escaping, so anything that came from a user or a
backend goes through :func:`code` or :func:`table`/:func:`pre`, which neutralize the
characters that would end the span or the block early. Tables are aligned code blocks
(East Asian wide characters count twice). :func:`chunks` splits long replies on line
boundaries and keeps code blocks balanced in every chunk.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

FENCE = "```"
ELLIPSIS = "…"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, with an ellipsis when cut."""
    if limit < 1:
        raise ValueError("limit must be positive")
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def code(text: object, limit: int = 80) -> str:
    """An inline code span; backticks inside become quotes so the span cannot break."""
    value = shorten(one_line(str(text)).replace("`", "'"), limit)
    return f"`{value}`" if value else "(empty)"


def bold(text: object) -> str:
    value = one_line(str(text)).replace("*", "")
    return f"*{value}*" if value else ""


def quote(text: str) -> str:
    return "\n".join("> " + line for line in text.split("\n"))


def _neutral_line(line: str) -> str:
    """A line that cannot close (or open) a preformatted block."""
    return "'''" + line[3:] if line.lstrip().startswith(FENCE) else line


def pre(text: str) -> str:
    """A preformatted block around ``text``."""
    body = "\n".join(_neutral_line(line) for line in text.split("\n"))
    return f"{FENCE}\n{body}\n{FENCE}"


def width(text: str) -> int:
    """Columns ``text`` takes in a monospace font (wide characters 2, combining 0)."""
    if text.isascii():  # the common case, without a Unicode lookup per character
        return len(text)
    total = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return total


def _cell(value: object, limit: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return shorten(one_line(str(value)), limit)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, max_cell: int = 40
) -> str:
    """Rows aligned under headers, in a code block; numeric columns right-aligned."""
    body = [list(r) for r in rows]
    numeric = [
        bool(body)
        and all(r[i] is None or _is_number(r[i]) for r in body)
        for i in range(len(headers))
    ]
    cells = [[_cell(h, max_cell) for h in headers]]
    cells += [[_cell(v, max_cell) for v in r] for r in body]
    widths = [max(width(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = []
        for i, value in enumerate(row):
            pad = " " * (widths[i] - width(value))
            parts.append(pad + value if numeric[i] else value + pad)
        lines.append("  ".join(parts).rstrip())
    return pre("\n".join(lines))


def duration(seconds: float) -> str:
    """``4000`` -> ``1h 6m``; ``42.5`` -> ``42s``; two units at most."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for i, (name, size) in enumerate(units):
        if total >= size:
            text = f"{total // size}{name}"
            if i + 1 < len(units):
                nxt, nsize = units[i + 1]
                rest = (total % size) // nsize
                if rest:
                    text += f" {rest}{nxt}"
            return text
    return "0s"

def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else (many or word + 's')}"


def chunks(text: str, limit: int = 3000) -> list[str]:
    """``text`` as messages of at most ``limit`` characters, split on line boundaries.

    A line longer than a chunk is cut hard. A code block cut by a split is closed at the
    end of one chunk and reopened at the start of the next, so each chunk renders alone.
    """
    if limit < 16:
        raise ValueError("limit must be at least 16")
    budget = limit - len("\n" + FENCE)  # room to close an open block
    piece_max = budget - len(FENCE + "\n")  # room to reopen it
    out: list[str] = []
    cur: list[str] = []
    size = 0
    in_pre = False

    def emit() -> None:
        nonlocal cur, size
        carry: list[str] = []
        if in_pre:
            if cur and cur[-1].startswith(FENCE) and len(cur) > 1:
                carry = [cur.pop()]  # do not leave an empty block behind
            elif len(cur) > 1:
                cur.append(FENCE)
            else:
                cur = []
            carry = carry or [FENCE]
        body = "\n".join(cur).strip("\n")
        if body.strip():
            out.append(body)
        cur = carry
        size = len("\n".join(cur))

    for line in text.split("\n"):
        pieces = [line[i : i + piece_max] for i in range(0, len(line), piece_max)] or [""]
        for piece in pieces:
            add = len(piece) + (1 if cur else 0)
            if cur and size + add > budget:
                emit()
                add = len(piece) + (1 if cur else 0)
            cur.append(piece)
            size += add
        if not in_pre and line.startswith(FENCE):
            in_pre = True
        elif in_pre and line.strip() == FENCE:
            in_pre = False
    body = "\n".join(cur).strip("\n")
    if body.strip():
        out.append(body)
    return out
