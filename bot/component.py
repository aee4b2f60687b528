"""The chat bot component: one XMPP session, three ways in, one command set.

Why one component object: the chat door (:mod:`bot.chat`), the room tracker
(:mod:`bot.rooms`), the ad-hoc door (:mod:`bot.adhoc`) and the feed relays
(:mod:`bot.relay`) share one connection, one :class:`~commands.dispatch.Dispatcher`
(so roles, rate limits, confirmations and the audit are the same whichever way a
command came in) and one state file. :func:`start_bot` opens them in order and
registers their shutdown on the caller's exit stack, in reverse.

The bot logs in as the ``bot`` account with the fixed resource ``bot``, so the CLI (and
any ad-hoc client) can address it as ``bot@domain/bot``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from backchannel.operator_backend import RuntimeBackend
from bot.adhoc import AdhocDoor
from bot.adhoc_client import BOT_RESOURCE
from bot.chat import ChatDoor
from bot.relay import FeedRelays
from bot.rooms import Rooms
from bot.state import BotState
from commands.builtin import builtin_registry
from commands.dispatch import Dispatcher, log_audit
from commands.model import AuditRecord
from pubsub.client import PubSub
from pubsub.connection import XmppConnection

if TYPE_CHECKING:
    from backchannel.app import Runtime

log = logging.getLogger(__name__)

RESOURCE = BOT_RESOURCE
AUDIT_FLUSH_DELAY = 0.25  # seconds: audit rows are written in batches at most this late


class Bot:
    """The running bot: its connection, doors, relays and state."""

    def __init__(self, runtime: Runtime, conn: XmppConnection) -> None:
        settings = runtime.settings
        self.settings = settings
        self.conn = conn
        self.state = BotState(settings.bot.state)
        self._pending_audit: list[AuditRecord] = []
        self.rooms = Rooms(conn, settings.bot.nick, settings.bot.rooms,
                           on_joined=self._room_joined)
        self.relays = FeedRelays(conn, PubSub(conn, settings.xmpp.pubsub_service), settings,
                                 self.state, is_room=self.rooms.is_room,
                                 can_send=self.rooms.can_send)
        self.backend = RuntimeBackend(runtime, self.relays)
        self.dispatcher = Dispatcher(builtin_registry(), audit=self.audit,
                                     rate_per_minute=settings.bot.rate_limit_per_minute)
        self.chat = ChatDoor(conn, settings.bot, self.dispatcher, self.backend, self.rooms)
        self.adhoc = AdhocDoor(conn, settings.bot, self.dispatcher, self.backend)

    def audit(self, record: AuditRecord) -> None:
        """Every command attempt: one log line and one row in the state file.

        The log line is written at once; the rows go to SQLite in one transaction per
        :data:`AUDIT_FLUSH_DELAY`, so a command pays neither a commit nor a write on its
        way to the reply, and a burst of commands pays one commit. ``close`` flushes
        what is pending; a crash can lose at most that window's rows (not the log lines).
        """
        log_audit(record)
        self._pending_audit.append(record)
        if len(self._pending_audit) == 1:
            try:
                asyncio.get_running_loop().call_later(AUDIT_FLUSH_DELAY, self._flush_audit)
            except RuntimeError:  # no loop running (tests calling directly)
                self._flush_audit()

    def audit_rows(self, limit: int) -> list[dict[str, object]]:
        """The newest audit rows, pending ones included (written first)."""
        self._flush_audit()
        return self.state.audit(limit)

    def _flush_audit(self) -> None:
        records, self._pending_audit = self._pending_audit, []
        if not records:
            return
        try:
            self.state.record_many(records)
        except Exception:
            log.exception("could not store %d audit records", len(records))

    def _room_joined(self, room: str) -> None:
        self.relays.wake(room)

    async def start(self) -> None:
        self.chat.start()
        self.adhoc.start()
        self.rooms.start()
        await self.relays.start()
        log.info("bot ready as %s (%d rooms, %d commands)", self.conn.jid,
                 len(self.rooms.rooms), len(self.dispatcher.registry))

    async def close(self) -> None:
        self.rooms.close()
        await self.chat.close()
        await self.adhoc.close()
        await self.relays.close()
        self._flush_audit()
        self.state.close()


async def start_bot(runtime: Runtime, stack: contextlib.AsyncExitStack) -> Bot:
    """Open the bot's own session as account ``bot`` and start it; closed by ``stack``."""
    settings = runtime.settings
    conn = XmppConnection(settings.xmpp, settings.account("bot"), resource=RESOURCE)
    bot = Bot(runtime, conn)
    stack.push_async_callback(conn.close)
    await bot.start()  # handlers first, so nothing from the first session is missed
    stack.push_async_callback(bot.close)
    await conn.start()
    runtime.connections["bot"] = conn
    return bot
