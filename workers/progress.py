"""Where an event stands inside the worker, read from the worker's store file.

Why a separate read-only reader: the gateway answers ``GET /v1/events/{id}`` from the
nodes (received, done, dead-lettered), but only the worker knows that it has taken an
event and is working on it. When the gateway runs on the machine that holds the worker's
store (the default layout, and the demo), it opens that file read-only and can tell a
site "in progress" with per-task counts. Read-only means it can never disturb the
worker: WAL readers do not block the writer. Without the file (components on separate
machines) the gateway simply says "received".
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class StoreProgress:
    """``progress(event_id)`` for the gateway, from the worker store at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None and self.path.exists():
            try:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                           isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA busy_timeout=1000")
            except sqlite3.Error as exc:
                log.warning("cannot read the worker store %s: %s", self.path, exc)
                self._db = None
        return self._db

    def __call__(self, event_id: str) -> dict[str, Any] | None:
        """The event's worker state and tasks, or None when the worker has not taken it
        (or its store is not on this machine)."""
        db = self._connect()
        if db is None:
            return None
        try:
            row = db.execute("SELECT state, received_at FROM events WHERE id = ?",
                             (event_id,)).fetchone()
            if row is None:
                return None
            tasks = db.execute("SELECT task, state, attempts FROM tasks WHERE event_id = ? "
                               "ORDER BY task", (event_id,)).fetchall()
        except sqlite3.Error as exc:  # e.g. the schema is not there yet
            log.warning("cannot read event %s from the worker store: %s", event_id, exc)
            return None
        return {"state": str(row[0]), "received_at": float(row[1]),
                "tasks": [{"task": t, "state": s, "attempts": int(a)} for t, s, a in tasks]}

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
