"""The analyzer: which tasks an event needs, from the configured routes (glob patterns).

The first route whose pattern matches the event type wins; no match means the event is
ignored or dead-lettered, as ``worker.unknown_types`` says.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from backchannel.config import Route


class Analyzer:
    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes

    def tasks_for(self, event_type: str) -> tuple[str, ...] | None:
        for route in self.routes:
            if fnmatchcase(event_type, route.pattern):
                return route.tasks
        return None

    def task_names(self) -> set[str]:
        return {t for r in self.routes for t in r.tasks}
