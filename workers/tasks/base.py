"""The task plug-in interface and its registry (entry-point group ``backchannel.tasks``).

A plug-in is a class with a ``build(settings, env)`` classmethod returning an object with
``name``, ``service`` and ``async run(event) -> result``, and optionally
``async warm_up()``, awaited once before the worker takes work (load an index, open a
pool). ``run`` returns a JSON-able
mapping or raises :class:`~backchannel.errors.TemporaryTaskError` (retry later) or
:class:`~backchannel.errors.PermanentTaskError` (do not retry). Anything else is treated
as temporary and logged with its traceback, because it is a bug in the plug-in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

import aiohttp

from backchannel.config import ServiceSettings, Settings
from backchannel.errors import ConfigError
from pubsub.envelope import Event
from workers.store import Store

log = logging.getLogger(__name__)

GROUP = "backchannel.tasks"


@dataclass
class TaskEnv:
    """What a task may use: settings, the store (caches, local records), an HTTP session."""

    settings: Settings
    store: Store
    http: aiohttp.ClientSession


class Task(Protocol):
    name: str
    service: str

    async def run(self, event: Event) -> Mapping[str, Any]: ...

    async def aclose(self) -> None: ...


class TaskFactory(Protocol):
    @classmethod
    def build(cls, name: str, settings: ServiceSettings, env: TaskEnv) -> Task: ...


def available() -> dict[str, Any]:
    """Installed task plug-ins by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def build_tasks(names: set[str], env: TaskEnv) -> dict[str, Task]:
    found = available()
    tasks: dict[str, Task] = {}
    for name in sorted(names):
        service_settings = env.settings.service(name)
        kind = str(service_settings.options.get("plugin", name))
        ep = found.get(kind)
        if ep is None:
            raise ConfigError(
                f"task {kind!r} is routed but no plug-in provides it "
                f"(installed: {', '.join(sorted(found)) or 'none'})",
                file=env.settings.source_file, key=f"services.{name}.plugin",
            )
        factory = ep.load()
        tasks[name] = factory.build(name, service_settings, env)
        log.info("task %s: plug-in %s", name, kind)
    return tasks
