"""Plain, frozen views of the system's state: what the backend hands to the commands.

Why separate types: the commands must not import the worker, the store or slixmpp. The
backend (a worker, a remote worker over XMPP, a test fake) fills these small records and
the commands only render them. :func:`jsonable` turns any of them into JSON-able data, so
every ``Result.data`` can be printed by the CLI with ``--json`` unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any


@dataclass(frozen=True)
class ComponentView:
    """One component (bot, worker, gateway...) and how it is doing."""

    name: str
    state: str
    detail: str = ""


@dataclass(frozen=True)
class StatusView:
    components: tuple[ComponentView, ...]
    connected: bool
    server: str
    uptime_s: float
    queue_depth: int
    in_flight: int
    breakers: Mapping[str, str] = field(default_factory=dict)
    paused: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskStatsView:
    """Outcomes of one task kind over the stats window; latencies are None without samples."""

    task: str
    successes: int
    failures: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class StatsView:
    window_s: float
    events_per_s: float
    tasks: tuple[TaskStatsView, ...] = ()


@dataclass(frozen=True)
class EventSummary:
    id: str
    type: str
    source: str
    received_at: datetime
    state: str


@dataclass(frozen=True)
class TaskAttemptView:
    task: str
    attempt: int
    started_at: datetime
    duration_ms: float | None
    outcome: str
    error: str | None = None


@dataclass(frozen=True)
class CallbackAttemptView:
    attempt: int
    at: datetime
    status: str
    error: str | None = None


@dataclass(frozen=True)
class EventTrace:
    event: EventSummary
    tasks: tuple[TaskAttemptView, ...] = ()
    callbacks: tuple[CallbackAttemptView, ...] = ()


@dataclass(frozen=True)
class DeadLetterView:
    id: str
    event_id: str
    reason: str
    last_error: str
    attempts: int
    at: datetime


def iso(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """Views, mappings, sequences, datetimes and enums as JSON-able data.

    Non-finite floats become None (JSON has no NaN); unknown objects become their ``str``
    so a backend returning something odd cannot make the CLI's ``--json`` crash.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)
