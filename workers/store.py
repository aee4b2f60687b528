"""The worker's durable state: inbox, per-task attempts, outbox, callbacks, dead letters.

Why SQLite and why here: an event is written to this store before anything acts on it,
and every step records its outcome before the next one starts. After ``kill -9`` the
worker reads where each event stood and resumes: a task that succeeded is never run
again, a result not yet confirmed by the XMPP server is still in the outbox, a callback
not yet acknowledged is still due. WAL mode with ``synchronous=NORMAL`` survives a
killed process; every hot query is covered by an index, so no step is linear in the
backlog.

States: event ``pending`` -> ``done`` | ``failed`` (some task dead) | ``ignored`` (no route)
| ``deadletter`` (refused); task ``pending`` -> ``ok`` | ``dead``; callback ``pending`` ->
``ok`` | ``dead``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backchannel.errors import StoreError
from backchannel.sqlite import open_db

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    doc TEXT NOT NULL,
    state TEXT NOT NULL,
    received_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS events_received ON events (received_at);
CREATE INDEX IF NOT EXISTS events_state ON events (state);
CREATE TABLE IF NOT EXISTS tasks (
    event_id TEXT NOT NULL,
    task TEXT NOT NULL,
    service TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    result TEXT,
    duration_ms REAL,
    finished_at REAL,
    PRIMARY KEY (event_id, task)
);
DROP INDEX IF EXISTS tasks_due;
CREATE INDEX IF NOT EXISTS tasks_due_ordered ON tasks (service, state, next_at, event_id);
CREATE TABLE IF NOT EXISTS attempts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    what TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_at REAL NOT NULL,
    duration_ms REAL NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_event ON attempts (event_id);
CREATE INDEX IF NOT EXISTS attempts_time ON attempts (started_at);
CREATE TABLE IF NOT EXISTS callbacks (
    event_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    last_status INTEGER
);
CREATE INDEX IF NOT EXISTS callbacks_due ON callbacks (state, next_at);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    item_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deadletters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    last_error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'active'
);
CREATE INDEX IF NOT EXISTS deadletters_state ON deadletters (state, id);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    service TEXT NOT NULL,
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL,
    writes INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (service, key)
);
CREATE TABLE IF NOT EXISTS paused (service TEXT PRIMARY KEY, at REAL NOT NULL);
"""


@dataclass(frozen=True)
class TaskRow:
    event_id: str
    task: str
    service: str
    state: str
    attempts: int
    next_at: float
    last_error: str | None
    result: Any
    duration_ms: float | None


@dataclass(frozen=True)
class EventRow:
    id: str
    type: str
    source: str
    doc: dict[str, Any]
    state: str
    received_at: float
    finished_at: float | None


@dataclass(frozen=True)
class CallbackRow:
    event_id: str
    site: str
    state: str
    attempts: int
    next_at: float
    last_error: str | None
    last_status: int | None


@dataclass(frozen=True)
class DeadLetterRow:
    id: int
    event_id: str
    kind: str
    reason: str
    last_error: str | None
    attempts: int
    at: float
    state: str


class Store:
    """All worker state in one SQLite file. Only called from the event loop's thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.db = open_db(path, SCHEMA, "worker store")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"worker store: {exc}") from exc

    def q(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row | tuple[Any, ...]]:
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"worker store: {exc}") from exc

    # ------------------------------------------------------------------ inbox
    def accept(self, event_id: str, type_: str, source: str, doc: Mapping[str, Any],
               tasks: Iterable[tuple[str, str]], state: str = "pending") -> bool:
        """Record a new event and its (task, service) pairs; False if already known."""
        now = time.time()
        with self.tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO events (id, type, source, doc, state, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, type_, source, json.dumps(doc, separators=(",", ":")), state, now),
            )
            if cur.rowcount == 0:
                return False
            db.executemany(
                "INSERT OR IGNORE INTO tasks (event_id, task, service, state, next_at) "
                "VALUES (?, ?, ?, 'pending', ?)",
                [(event_id, task, service, now) for task, service in tasks],
            )
        return True

    def event(self, event_id: str) -> EventRow | None:
        rows = self.q("SELECT id, type, source, doc, state, received_at, finished_at "
                      "FROM events WHERE id = ?", (event_id,))
        return _event_row(rows[0]) if rows else None

    def events(self, *, type_glob: str | None = None, source: str | None = None,
               since: float | None = None, limit: int = 20) -> list[EventRow]:
        sql = "SELECT id, type, source, doc, state, received_at, finished_at FROM events"
        where: list[str] = []
        params: list[Any] = []
        if type_glob:
            where.append("type GLOB ?")
            params.append(type_glob)
        if source:
            where.append("source = ?")
            params.append(source)
        if since is not None:
            where.append("received_at >= ?")
            params.append(since)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received_at DESC LIMIT ?"
        params.append(limit)
        return [_event_row(r) for r in self.q(sql, params)]

    def set_event_state(self, event_id: str, state: str) -> None:
        finished = time.time() if state in ("done", "failed", "ignored", "deadletter") else None
        with self.tx() as db:
            db.execute("UPDATE events SET state = ?, finished_at = ? WHERE id = ?",
                       (state, finished, event_id))

    def counts(self) -> dict[str, int]:
        return {state: n for state, n in self.q(
            "SELECT state, COUNT(*) FROM events GROUP BY state")}

    def pending_events(self) -> int:
        return int(self.q("SELECT COUNT(*) FROM events WHERE state = 'pending'")[0][0])

    # ------------------------------------------------------------------ tasks
    def due_tasks(self, service: str, now: float, limit: int,
                  exclude: set[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
        """Due tasks of one service, oldest first. Every lane orders ties the same way
        (by event id, which sorts by time for ULIDs), so the lanes work on the same events
        at the same time and finished events come out steadily, not after the backlog."""
        rows = self.q(
            "SELECT event_id, task FROM tasks WHERE service = ? AND state = 'pending' "
            "AND next_at <= ? ORDER BY next_at, event_id LIMIT ?",
            (service, now, limit + (len(exclude) if exclude else 0)),
        )
        out = [(r[0], r[1]) for r in rows]
        if exclude:
            out = [k for k in out if k not in exclude]
        return out[:limit]

    def next_due(self, service: str) -> float | None:
        rows = self.q("SELECT MIN(next_at) FROM tasks WHERE service = ? AND state = 'pending'",
                      (service,))
        return rows[0][0] if rows and rows[0][0] is not None else None

    def tasks(self, event_id: str) -> list[TaskRow]:
        rows = self.q(
            "SELECT event_id, task, service, state, attempts, next_at, last_error, result, "
            "duration_ms FROM tasks WHERE event_id = ? ORDER BY task", (event_id,))
        return [TaskRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6],
                        json.loads(r[7]) if r[7] else None, r[8]) for r in rows]

    def task_finished(self, event_id: str, task: str, *, ok: bool, attempts: int,
                      result: Any, error: str | None, started: float,
                      duration_ms: float, next_at: float | None) -> None:
        """Record one attempt. ``next_at`` set: retry then; else final (ok or dead)."""
        state = "ok" if ok else ("pending" if next_at is not None else "dead")
        with self.tx() as db:
            db.execute(
                "UPDATE tasks SET state = ?, attempts = ?, next_at = COALESCE(?, next_at), "
                "last_error = ?, result = ?, duration_ms = ?, finished_at = ? "
                "WHERE event_id = ? AND task = ?",
                (state, attempts, next_at, error,
                 json.dumps(result) if result is not None else None, duration_ms,
                 None if state == "pending" else time.time(), event_id, task),
            )
            db.execute(
                "INSERT INTO attempts (event_id, what, attempt, started_at, duration_ms, "
                "outcome, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event_id, task, attempts, started, duration_ms,
                 "ok" if ok else ("retry" if next_at is not None else "dead"), error),
            )

    def defer_task(self, event_id: str, task: str, next_at: float) -> None:
        """Postpone a pending task without counting an attempt (breaker open)."""
        with self.tx() as db:
            db.execute("UPDATE tasks SET next_at = ? WHERE event_id = ? AND task = ? "
                       "AND state = 'pending'", (next_at, event_id, task))

    def expedite_tasks(self, service: str, now: float) -> int:
        """Make every pending task of ``service`` that waits for a later retry due now."""
        with self.tx() as db:
            cur = db.execute("UPDATE tasks SET next_at = ? WHERE service = ? AND "
                             "state = 'pending' AND next_at > ?", (now, service, now))
            return cur.rowcount

    def expedite_callbacks(self, site: str, now: float) -> int:
        """Make every pending callback to ``site`` that waits for a later retry due now."""
        with self.tx() as db:
            cur = db.execute("UPDATE callbacks SET next_at = ? WHERE site = ? AND "
                             "state = 'pending' AND next_at > ?", (now, site, now))
            return cur.rowcount

    def task_state(self, event_id: str, task: str) -> tuple[str, int] | None:
        """(state, attempts) of one task."""
        rows = self.q("SELECT state, attempts FROM tasks WHERE event_id = ? AND task = ?",
                      (event_id, task))
        return (rows[0][0], rows[0][1]) if rows else None

    def reset_tasks(self, event_id: str, only_dead: bool) -> int:
        now = time.time()
        with self.tx() as db:
            cur = db.execute(
                "UPDATE tasks SET state = 'pending', attempts = 0, next_at = ?, "
                "last_error = NULL WHERE event_id = ? AND (state = 'dead' OR ? = 0)",
                (now, event_id, int(only_dead)))
            db.execute("UPDATE events SET state = 'pending', finished_at = NULL WHERE id = ?",
                       (event_id,))
        return cur.rowcount

    def attempts(self, event_id: str) -> list[tuple[str, int, float, float, str, str | None]]:
        return [tuple(r) for r in self.q(
            "SELECT what, attempt, started_at, duration_ms, outcome, error FROM attempts "
            "WHERE event_id = ? ORDER BY seq", (event_id,))]

    def attempt_stats(self, since: float) -> list[tuple[str, str, int, list[float]]]:
        """(what, outcome, count, durations) since ``since``, for ``stats``."""
        rows = self.q("SELECT what, outcome, duration_ms FROM attempts WHERE started_at >= ?",
                      (since,))
        grouped: dict[tuple[str, str], list[float]] = {}
        for what, outcome, ms in rows:
            grouped.setdefault((what, outcome), []).append(ms)
        return [(w, o, len(d), d) for (w, o), d in grouped.items()]

    # ------------------------------------------------------------------ outbox
    def add_outbox(self, db: sqlite3.Connection, items: Iterable[tuple[str, str, str]]) -> None:
        db.executemany("INSERT INTO outbox (node, item_id, doc) VALUES (?, ?, ?)", items)

    def outbox(self, limit: int, after: int = 0) -> list[tuple[int, str, str, str]]:
        return [tuple(r) for r in self.q(
            "SELECT seq, node, item_id, doc FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit))]

    def outbox_done(self, seqs: Sequence[int]) -> None:
        with self.tx() as db:
            db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def outbox_size(self) -> int:
        return int(self.q("SELECT COUNT(*) FROM outbox")[0][0])

    # ------------------------------------------------------------------ callbacks
    def add_callback(self, db: sqlite3.Connection, event_id: str, site: str) -> None:
        db.execute(
            "INSERT INTO callbacks (event_id, site, state, next_at) VALUES (?, ?, 'pending', ?) "
            "ON CONFLICT (event_id) DO UPDATE SET state = 'pending', attempts = 0, "
            "next_at = excluded.next_at, last_error = NULL",
            (event_id, site, time.time()))

    def due_callbacks(self, now: float, limit: int, exclude: set[str]) -> list[str]:
        rows = self.q("SELECT event_id FROM callbacks WHERE state = 'pending' AND next_at <= ? "
                      "ORDER BY next_at LIMIT ?", (now, limit + len(exclude)))
        return [r[0] for r in rows if r[0] not in exclude][:limit]

    def next_callback_due(self) -> float | None:
        rows = self.q("SELECT MIN(next_at) FROM callbacks WHERE state = 'pending'")
        return rows[0][0] if rows and rows[0][0] is not None else None

    def callback(self, event_id: str) -> CallbackRow | None:
        rows = self.q("SELECT event_id, site, state, attempts, next_at, last_error, last_status "
                      "FROM callbacks WHERE event_id = ?", (event_id,))
        return CallbackRow(*rows[0]) if rows else None

    def callback_finished(self, event_id: str, *, state: str, attempts: int,
                          status: int | None, error: str | None, next_at: float | None,
                          started: float, duration_ms: float) -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE callbacks SET state = ?, attempts = ?, last_status = ?, last_error = ?, "
                "next_at = COALESCE(?, next_at) WHERE event_id = ?",
                (state, attempts, status, error, next_at, event_id))
            db.execute(
                "INSERT INTO attempts (event_id, what, attempt, started_at, duration_ms, "
                "outcome, error) VALUES (?, 'callback', ?, ?, ?, ?, ?)",
                (event_id, attempts, started, duration_ms,
                 "ok" if state == "ok" else ("retry" if state == "pending" else "dead"),
                 error))

    # ------------------------------------------------------------------ dead letters
    def add_deadletter(self, db: sqlite3.Connection, event_id: str, kind: str, reason: str,
                       last_error: str | None, attempts: int) -> int:
        db.execute("UPDATE deadletters SET state = 'superseded' WHERE event_id = ? AND kind = ? "
                   "AND state = 'active'", (event_id, kind))
        cur = db.execute(
            "INSERT INTO deadletters (event_id, kind, reason, last_error, attempts, at) "
            "VALUES (?, ?, ?, ?, ?, ?)", (event_id, kind, reason, last_error, attempts,
                                          time.time()))
        return int(cur.lastrowid or 0)

    def deadletters(self, limit: int = 20, state: str = "active") -> list[DeadLetterRow]:
        rows = self.q("SELECT id, event_id, kind, reason, last_error, attempts, at, state "
                      "FROM deadletters WHERE state = ? ORDER BY id DESC LIMIT ?",
                      (state, limit))
        return [DeadLetterRow(*r) for r in rows]

    def deadletter(self, dl_id: int) -> DeadLetterRow | None:
        rows = self.q("SELECT id, event_id, kind, reason, last_error, attempts, at, state "
                      "FROM deadletters WHERE id = ?", (dl_id,))
        return DeadLetterRow(*rows[0]) if rows else None

    def deadletter_count(self) -> int:
        return int(self.q("SELECT COUNT(*) FROM deadletters WHERE state = 'active'")[0][0])

    def set_deadletter_state(self, dl_id: int, state: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE deadletters SET state = ? WHERE id = ?", (state, dl_id))

    def purge_deadletters(self) -> int:
        with self.tx() as db:
            cur = db.execute("UPDATE deadletters SET state = 'purged' WHERE state = 'active'")
        return cur.rowcount

    # ------------------------------------------------------------------ cache, records
    def cache_get(self, key: str) -> Any:
        rows = self.q("SELECT value FROM cache WHERE key = ? AND expires_at > ?",
                      (key, time.time()))
        return json.loads(rows[0][0]) if rows else None

    def cache_put(self, key: str, value: Any, ttl: float) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO cache (key, value, expires_at) VALUES (?, ?, ?)",
                       (key, json.dumps(value), time.time() + ttl))

    def record(self, service: str, key: str, data: Mapping[str, Any]) -> int:
        """Upsert a local CRM / mailing-list record; returns how many writes it has had."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO records (service, key, data, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (service, key) DO UPDATE SET data = excluded.data, "
                "at = excluded.at, writes = writes + 1",
                (service, key, json.dumps(data), time.time()))
            row = db.execute("SELECT writes FROM records WHERE service = ? AND key = ?",
                             (service, key)).fetchone()
        return int(row[0])

    def records(self, service: str) -> dict[str, Any]:
        return {k: json.loads(d) for k, d in self.q(
            "SELECT key, data FROM records WHERE service = ?", (service,))}

    # ------------------------------------------------------------------ retention
    def prune(self, before: float, batch: int = 5000) -> int:
        """Delete events finished before ``before`` with their tasks, attempts and
        callbacks, ``batch`` events per transaction; events with an open dead letter stay.
        Returns how many events went."""
        removed = 0
        while True:
            with self.tx() as db:
                ids = [r[0] for r in db.execute(
                    "SELECT id FROM events WHERE finished_at IS NOT NULL AND finished_at < ? "
                    "AND state != 'pending' AND NOT EXISTS (SELECT 1 FROM deadletters d "
                    "WHERE d.event_id = events.id AND d.state = 'active') LIMIT ?",
                    (before, batch)).fetchall()]
                if not ids:
                    break
                marks = ",".join("?" * len(ids))
                for table, column in (("tasks", "event_id"), ("attempts", "event_id"),
                                      ("callbacks", "event_id"), ("events", "id")):
                    db.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})",  # noqa: S608
                               ids)
                db.execute("DELETE FROM deadletters WHERE state != 'active' AND at < ?",
                           (before,))
                db.execute("DELETE FROM cache WHERE expires_at < ?", (time.time(),))
            removed += len(ids)
            if len(ids) < batch:
                break
        return removed

    # ------------------------------------------------------------------ pause
    def paused(self) -> set[str]:
        return {r[0] for r in self.q("SELECT service FROM paused")}

    def set_paused(self, service: str, paused: bool) -> None:
        with self.tx() as db:
            if paused:
                db.execute("INSERT OR IGNORE INTO paused (service, at) VALUES (?, ?)",
                           (service, time.time()))
            else:
                db.execute("DELETE FROM paused WHERE service = ?", (service,))


def _event_row(r: Any) -> EventRow:
    return EventRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6])
