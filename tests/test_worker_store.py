"""The worker store's retention: finished events go after the retention, open work stays."""

from __future__ import annotations

import time
from pathlib import Path

from workers.store import Store


def test_prune_removes_old_finished_events_and_keeps_open_work(tmp_path: Path) -> None:
    store = Store(tmp_path / "w.sqlite")
    for i in range(12):
        store.accept(f"e{i}", "user.registered", "s", {"id": f"e{i}"}, [("crm", "crm")])
    old = time.time() - 10 * 86400
    with store.tx() as db:
        db.execute("UPDATE events SET state = 'done', finished_at = ? WHERE id != 'e0'", (old,))
        db.execute("UPDATE events SET state = 'failed', finished_at = ? WHERE id = 'e1'",
                   (old,))
        store.add_deadletter(db, "e1", "task", "crm failed", "HTTP 503", 5)
        db.execute("UPDATE events SET finished_at = ? WHERE id = 'e2'", (time.time(),))
    store.task_finished("e3", "crm", ok=True, attempts=1, result={}, error=None,
                        started=old, duration_ms=1.0, next_at=None)

    removed = store.prune(time.time() - 7 * 86400, batch=4)

    assert removed == 9  # e3..e11: old and finished; batches of 4 went through
    left = {r.id for r in store.events(limit=100)}
    assert left == {"e0", "e1", "e2"}  # pending, open dead letter, recent
    assert store.tasks("e3") == [] and store.attempts("e3") == []
    assert store.tasks("e0") != []
    assert len(store.deadletters()) == 1
    store.close()
