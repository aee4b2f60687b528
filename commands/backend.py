"""The one interface the operator commands talk to.

Why a Protocol: the commands are defined once and run in the bot, the CLI and the ad-hoc
front door, against a worker in the same process or one reached over XMPP. They only see
this interface and the plain views in :mod:`commands.views`; tests use an in-memory fake.

Implementations raise :class:`~backchannel.errors.BackchannelError` subclasses for
expected failures (``NotConnected``, ``StoreError``...); a
:class:`~backchannel.errors.CommandError` raised here goes to the user verbatim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from commands.views import DeadLetterView, EventSummary, EventTrace, StatsView, StatusView

__all__ = ["OperatorBackend"]


class OperatorBackend(Protocol):
    """What an operator can ask of, and do to, a running backchannel."""

    async def status(self) -> StatusView: ...

    async def stats(self, window_s: float) -> StatsView: ...

    async def events(
        self, type_glob: str | None, source: str | None, last: int
    ) -> Sequence[EventSummary]:
        """The newest ``last`` events, newest first, filtered by type glob and source."""
        ...

    async def trace(self, event_id: str) -> EventTrace | None: ...

    async def deadletters(self, limit: int) -> Sequence[DeadLetterView]:
        """The newest ``limit`` dead letters, newest first."""
        ...

    async def deadletter(self, deadletter_id: str) -> DeadLetterView | None: ...

    async def retry_deadletter(self, deadletter_id: str) -> bool:
        """Queue one dead letter again; False when there is no such dead letter."""
        ...

    async def retry_all_deadletters(self) -> int:
        """Queue every dead letter again; returns how many."""
        ...

    async def purge_deadletters(self) -> int:
        """Delete every dead letter; returns how many."""
        ...

    async def replay(self, since: datetime, type_glob: str | None) -> int:
        """Process again every stored event received since ``since``; returns how many."""
        ...

    async def feeds(self) -> Sequence[str]: ...

    async def subscribe(self, feed: str, target: str) -> None:
        """Relay ``feed`` into ``target`` (a bare JID or a room JID)."""
        ...

    async def unsubscribe(self, feed: str, target: str) -> bool:
        """Stop relaying; False when ``target`` was not subscribed to ``feed``."""
        ...

    async def subscriptions(self, target: str) -> Sequence[str]: ...

    async def geocode(self, address: str) -> Mapping[str, Any] | None:
        """The best match (at least ``latitude``/``longitude``), or None without a match."""
        ...

    async def pause(self, service: str) -> None: ...

    async def resume(self, service: str) -> None: ...

    async def services(self) -> Sequence[str]: ...

    async def version(self) -> str: ...
