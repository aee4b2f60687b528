"""What the worker publishes about an event: its result, feed items and dead letters.

All are CloudEvents whose ``subject`` is the original event id, with the original id as
item id on their own node, so republishing (a retry, a replay) replaces the old item
instead of adding a second one, and anyone can look a result up by event id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pubsub.envelope import Event, new_id, utc_now
from workers.store import TaskRow

WORKER_SOURCE = "urn:backchannel:worker"


def _event(type_: str, subject: str, data: Any, item_id: str) -> Event:
    return Event(id=item_id, source=WORKER_SOURCE, type=type_, data=data, time=utc_now(),
                 subject=subject)


def result_event(event: Event, site: str, tasks: Sequence[TaskRow], received_at: float,
                 completed_at: float) -> Event:
    ok = all(t.state == "ok" for t in tasks)
    data = {
        "event_type": event.type,
        "source": event.source,
        "site": site,
        "status": "done" if ok else "failed",
        "received_at": received_at,
        "completed_at": completed_at,
        "latency_ms": round((completed_at - received_at) * 1000, 1),
        "tasks": {
            t.task: {
                "status": "ok" if t.state == "ok" else "failed",
                "result": t.result,
                "error": t.last_error if t.state != "ok" else None,
                "attempts": t.attempts,
                "duration_ms": round(t.duration_ms or 0.0, 2),
            }
            for t in tasks
        },
    }
    return _event("backchannel.result", event.id, data, event.id)


def _geo(tasks: Sequence[TaskRow]) -> Mapping[str, Any]:
    for t in tasks:
        if t.task == "geocode" and t.state == "ok" and isinstance(t.result, dict) \
                and t.result.get("found"):
            return t.result
    return {}


def signup_event(event: Event, site: str, tasks: Sequence[TaskRow],
                 personal_data: bool) -> Event:
    data = event.data if isinstance(event.data, dict) else {}
    geo = _geo(tasks)
    name = data.get("name") if isinstance(data.get("name"), str) else None
    feed: dict[str, Any] = {
        "name": (name or "someone")[:80],
        "city": geo.get("city"),
        "region": geo.get("region"),
        "country": geo.get("country"),
        "country_code": geo.get("country_code"),
        "latitude": geo.get("latitude"),
        "longitude": geo.get("longitude"),
        "site": site,
    }
    if personal_data:
        for key in ("email", "user_id", "address"):
            if key in data:
                feed[key] = data[key]
    return _event("backchannel.feed.signup", event.id, feed, event.id)


def activity_line(event: Event, site: str, tasks: Sequence[TaskRow], status: str) -> str:
    data = event.data if isinstance(event.data, dict) else {}
    who = data.get("name") if isinstance(data.get("name"), str) else None
    where = _geo(tasks).get("display_name") or _geo(tasks).get("city")
    parts = [f"{site}: {event.type}"]
    if who:
        parts.append(str(who)[:60])
    if where:
        parts.append(f"({str(where)[:60]})")
    ok = sum(1 for t in tasks if t.state == "ok")
    if tasks:
        parts.append(f"- {ok}/{len(tasks)} tasks ok")
    failed = [t.task for t in tasks if t.state != "ok"]
    if failed:
        parts.append(f"- failed: {', '.join(failed)}")
    if status == "deadletter":
        parts.append("- dead-lettered")
    return " ".join(parts)


def activity_event(subject: str, line: str, type_: str, source: str, status: str) -> Event:
    data = {"line": line, "type": type_, "source": source, "status": status}
    return _event("backchannel.feed.activity", subject, data, subject if _safe(subject)
                  else new_id())


def deadletter_event(subject: str, kind: str, reason: str, last_error: str | None,
                     attempts: int, original: Any = None) -> Event:
    data = {"kind": kind, "reason": reason, "last_error": last_error, "attempts": attempts}
    if original is not None:
        data["original"] = original
    return _event("backchannel.deadletter", subject, data,
                  subject if _safe(subject) else new_id())


def _safe(item_id: str) -> bool:
    from pubsub.envelope import ID_RE

    return bool(item_id) and bool(ID_RE.match(item_id))
