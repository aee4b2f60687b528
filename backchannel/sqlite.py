"""Opening the SQLite files backchannel keeps (worker store, consumer memory, bot state).

One place for the settings they share: autocommit (each caller runs its own explicit
transactions), WAL so readers never block the writer, ``synchronous=NORMAL`` (survives a
killed process; ``FULL`` also survives a power cut), a busy timeout because the worker's
store and its consumer memory are two connections to one file, and one error type.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from backchannel.errors import StoreError


def open_db(path: str | Path, schema: str, what: str, *, durable: bool = False
            ) -> sqlite3.Connection:
    """Connect to ``path`` (creating its folder), apply the settings and ``schema``."""
    name = str(path)
    try:
        if name != ":memory:":
            Path(name).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(schema)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the {what} {name}: {exc}") from exc
    return db
