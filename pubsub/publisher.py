"""Publishing events: returns only once the XMPP server has stored the item.

That confirmation is the moment an event counts as accepted (the gateway answers 202
then, not before), so nothing is ever half-accepted.
"""

from __future__ import annotations

import logging

from backchannel.errors import EventTooLarge
from pubsub.client import PubSub
from pubsub.envelope import DEFAULT_MAX_BYTES, Event, to_element

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, pubsub: PubSub, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.pubsub = pubsub
        self.max_bytes = max_bytes
        self.published = 0

    async def publish(self, node: str, event: Event, *, timeout: float | None = None,
                      wait_connected: float = 5.0) -> str:
        """Publish ``event`` as item ``event.id`` on ``node``; return the stored item id."""
        payload = to_element(event)
        size = len((payload.text or "").encode("utf-8"))
        if size > self.max_bytes:
            raise EventTooLarge(f"event is {size} bytes; the limit is {self.max_bytes}")
        stored = await self.pubsub.publish(node, event.id, payload, timeout=timeout,
                                           wait_connected=wait_connected)
        self.published += 1
        log.debug("published %s %s to %s", event.type, event.id, node)
        return stored
