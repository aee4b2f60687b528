"""The consumer's durable memory: which item ids of which node were handed over.

SQLite in WAL mode with ``synchronous=NORMAL``: every mark is committed before the next
item is handed over, which survives a killed process (not necessarily a power cut; use
``synchronous=FULL`` through ``durable=True`` for that). Old ids are pruned beyond
``keep`` per node, so the file does not grow with the life of the node.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from backchannel.errors import StoreError
from backchannel.sqlite import open_db

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    item_id TEXT NOT NULL,
    at REAL NOT NULL,
    UNIQUE (node, item_id)
);
CREATE TABLE IF NOT EXISTS checkpoint (
    node TEXT PRIMARY KEY,
    item_id TEXT NOT NULL,
    at REAL NOT NULL
);
"""


class SeenStore:
    def __init__(self, path: str | Path, *, keep: int = 200_000, durable: bool = False) -> None:
        self.path = str(path)
        self.db = open_db(path, SCHEMA, "consumer store", durable=durable)
        self.keep = keep
        self._marks = 0

    def seen(self, node: str, item_id: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM seen WHERE node = ? AND item_id = ?", (node, item_id)
        ).fetchone()
        return row is not None

    def mark(self, node: str, item_id: str) -> bool:
        """Record ``item_id`` as handed over; False if it already was."""
        now = time.time()
        try:
            self.db.execute("BEGIN")
            cur = self.db.execute(
                "INSERT OR IGNORE INTO seen (node, item_id, at) VALUES (?, ?, ?)",
                (node, item_id, now),
            )
            self.db.execute(
                "INSERT INTO checkpoint (node, item_id, at) VALUES (?, ?, ?) "
                "ON CONFLICT (node) DO UPDATE SET item_id = excluded.item_id, at = excluded.at",
                (node, item_id, now),
            )
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise StoreError(f"cannot record item {item_id!r}: {exc}") from exc
        self._marks += 1
        if self._marks % 1000 == 0:
            self.prune(node)
        return cur.rowcount == 1

    def checkpoint(self, node: str) -> str | None:
        row = self.db.execute("SELECT item_id FROM checkpoint WHERE node = ?", (node,)).fetchone()
        return row[0] if row else None

    def count(self, node: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM seen WHERE node = ?", (node,))
                   .fetchone()[0])

    def prune(self, node: str) -> None:
        self.db.execute(
            "DELETE FROM seen WHERE node = ? AND seq < ("
            " SELECT seq FROM seen WHERE node = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (node, node, self.keep),
        )

    def close(self) -> None:
        self.db.close()
