"""The bot's durable state: the audit trail and the feed relays, in one SQLite file.

Why SQLite next to the log: the audit must survive the process (who ran what, where,
with what outcome), and relays must survive restarts (an operator who said
``subscribe signups`` in a room expects it to keep going after a deploy). Both are tiny
writes on the event loop's thread; WAL keeps them cheap.
"""

from __future__ import annotations

import logging
import sqlite3

from backchannel.errors import StoreError
from backchannel.sqlite import open_db
from commands.model import AuditRecord

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    where_ TEXT NOT NULL,
    room TEXT,
    command TEXT NOT NULL,
    args TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    duration_ms REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS relays (
    feed TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (feed, target)
);
"""


class BotState:
    """Audit records and relay subscriptions. Raises :class:`StoreError` on failure."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = open_db(path, SCHEMA, "bot state")

    def close(self) -> None:
        self._db.close()

    def _exec(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"bot state {self.path}: {exc}") from exc

    # -- audit ---------------------------------------------------------------------------
    def record_many(self, records: list[AuditRecord]) -> None:
        """Several audit rows in one transaction."""
        try:
            with self._db:
                self._db.executemany(
                    "INSERT INTO audit (at, who, where_, room, command, args, outcome, detail,"
                    " duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(r.at.isoformat(), r.who, r.where, r.room, r.command, r.args, r.outcome,
                      r.detail, r.duration_ms) for r in records])
        except sqlite3.Error as exc:
            raise StoreError(f"bot state {self.path}: {exc}") from exc

    def record(self, r: AuditRecord) -> None:
        self._exec(
            "INSERT INTO audit (at, who, where_, room, command, args, outcome, detail,"
            " duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.at.isoformat(), r.who, r.where, r.room, r.command, r.args, r.outcome,
             r.detail, r.duration_ms),
        )

    def audit(self, limit: int = 100) -> list[dict[str, object]]:
        """The newest ``limit`` audit rows, newest first."""
        rows = self._exec(
            "SELECT at, who, where_, room, command, args, outcome, detail, duration_ms"
            " FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        keys = ("at", "who", "where", "room", "command", "args", "outcome", "detail",
                "duration_ms")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # -- relays --------------------------------------------------------------------------
    def relays(self) -> list[tuple[str, str, str]]:
        """Every relay as (feed, target, kind), kind being ``chat`` or ``groupchat``."""
        rows = self._exec("SELECT feed, target, kind FROM relays ORDER BY feed, target")
        return [(str(f), str(t), str(k)) for f, t, k in rows]

    def add_relay(self, feed: str, target: str, kind: str) -> None:
        self._exec("INSERT OR REPLACE INTO relays (feed, target, kind) VALUES (?, ?, ?)",
                   (feed, target, kind))

    def remove_relay(self, feed: str, target: str) -> bool:
        found = self._exec("SELECT 1 FROM relays WHERE feed = ? AND target = ?", (feed, target))
        self._exec("DELETE FROM relays WHERE feed = ? AND target = ?", (feed, target))
        return bool(found)
