"""One XMPP connection, as every backchannel component uses it.

Why a wrapper: slixmpp does not reconnect after an established stream drops, mixes
stanza objects with iteration pitfalls, and raises its own exception types. This class
owns one ``ClientXMPP`` and adds what a long-running component needs:

- TLS with certificate checks by default; plaintext only when the settings mark the
  server as a loopback development server (validated in :mod:`backchannel.config`);
- a supervisor task that reconnects with capped exponential backoff and jitter after any
  drop or failed attempt, with XEP-0198 resumption when the server allows it;
- XEP-0199 keepalive pings;
- ``on_ready`` callbacks run after every (re)established session, so subscribers can
  catch up on what they missed;
- ``iq()`` that sends a raw ElementTree payload and translates slixmpp errors into
  :mod:`backchannel.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from backchannel.config import Account, XmppSettings
from backchannel.errors import ConfigError, NotConnected, XmppError, XmppRefused, XmppTimeout
from pubsub import slixmpp_speedups
from pubsub.routing import MessageHandler, Routes

log = logging.getLogger(__name__)
slixmpp_speedups.install()

STANZA_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
ReadyCallback = Callable[[bool], Awaitable[None]]  # argument: True when the session was resumed


class XmppConnection:
    """A supervised XMPP client session. Use as ``async with XmppConnection(...) as conn``."""

    def __init__(
        self,
        settings: XmppSettings,
        account: Account,
        *,
        resource: str = "backchannel",
        plugins: tuple[str, ...] = (),
        priority: int = 0,
    ) -> None:
        self.settings = settings
        self.account = account
        self.priority = priority
        jid = account.jid if "/" in account.jid else f"{account.jid}/{resource}"
        self.client = slixmpp.ClientXMPP(jid, account.password.reveal())
        c = self.client
        if settings.loopback_plaintext:
            c.enable_starttls = False
            c.enable_direct_tls = False
            c.enable_plaintext = True
        else:
            c.enable_plaintext = False
            c.enable_direct_tls = settings.direct_tls
            c.enable_starttls = not settings.direct_tls
            if settings.ca_file:
                c.ca_certs = Path(settings.ca_file)
        # No xep_0060: our PubSub requests are raw XML (pubsub/client.py), and its event
        # handlers would be matched against every incoming stanza for nothing.
        for name in ("xep_0030", "xep_0199", *plugins):
            c.register_plugin(name)
        # Stream management: ask the server to acknowledge every 20 stanzas rather than
        # every 5 (slixmpp's default); unacknowledged stanzas are kept for resumption.
        c.register_plugin("xep_0198", pconfig={"window": 20})
        if settings.loopback_plaintext:
            c.plugin["feature_mechanisms"].unencrypted_plain = True
        c.plugin["xep_0199"].enable_keepalive(interval=settings.keepalive_interval, timeout=30)
        self._routes = Routes()
        c.register_handler(self._routes.callback())
        c.add_event_handler("session_start", self._on_session_start)
        c.add_event_handler("session_resumed", self._on_session_resumed)
        c.add_event_handler("disconnected", self._on_lost)
        c.add_event_handler("connection_failed", self._on_connection_failed)
        c.add_event_handler("ssl_invalid_chain", self._on_bad_certificate)
        c.add_event_handler("failed_all_auth", self._on_auth_failed)
        c.add_event_handler("stream_error", self._on_stream_error)
        self.ready = asyncio.Event()
        self.sessions = 0  # how many sessions were established (new or resumed)
        self.drops = 0
        self._lost = asyncio.Event()
        self._auth_failed = False
        self._no_tls = False  # the login failed because the stream was never encrypted
        self._last_error = ""  # why the last attempt failed, for the timeout message
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._ready_callbacks: list[ReadyCallback] = []
        self._ready_tasks: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- lifecycle
    @property
    def jid(self) -> str:
        return str(self.client.boundjid)

    @property
    def bare_jid(self) -> str:
        return str(self.client.boundjid.bare)

    def on_ready(self, callback: ReadyCallback) -> None:
        """Run ``callback(resumed)`` after every established session (first and later)."""
        self._ready_callbacks.append(callback)

    def on_message(self, xpath: str, handler: MessageHandler, name: str) -> None:
        """Call ``handler(raw_xml)`` for each incoming stanza matching ``xpath``.

        Handlers get the raw ElementTree element: no slixmpp stanza iteration involved.
        ``xpath`` is a root tag and child tags in Clark notation (see :mod:`pubsub.routing`).
        """
        self._routes.add(xpath, handler, name)

    def remove_message_handler(self, name: str) -> None:
        """Stop calling the handler(s) registered under ``name``."""
        self._routes.remove(name)

    async def start(self, timeout: float = 30.0) -> None:
        """Connect and wait for the first session. Raises XmppError if none in time.

        A ``ca_file`` that cannot be read is a ConfigError here, before any connection:
        otherwise every TLS handshake fails and the caller only sees a timeout.
        """
        ca_file = self.settings.ca_file
        if ca_file and not self.settings.loopback_plaintext:
            try:
                Path(ca_file).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read the CA file {ca_file!r}: "
                                  f"{exc.strerror or exc}", key="xmpp.ca_file") from None
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name=f"xmpp:{self.jid}")
        ready = asyncio.create_task(self.ready.wait())
        try:
            done, _ = await asyncio.wait({ready, self._supervisor}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._supervisor in done:
            self._supervisor.result()  # re-raises the reason (e.g. bad credentials)
        if not self.ready.is_set():
            why = f"; last error: {self._last_error}" if self._last_error else ""
            raise XmppTimeout(
                f"no XMPP session as {self.account.bare} with "
                f"{self.settings.host}:{self.settings.port} within {timeout:.0f} s{why}"
            )

    async def close(self) -> None:
        """Leave cleanly: end the stream, stop reconnecting, cancel helpers."""
        self._closing = True
        self.client.plugin["xep_0199"].disable_keepalive()  # type: ignore[no-untyped-call]
        if self.ready.is_set():
            # Acknowledge what we received before ending the stream: the server re-routes
            # unacknowledged stanzas of a closed XEP-0198 session (a chat command would
            # reach the next session of this account and run twice).
            sm = self.client.plugin["xep_0198"]
            if sm.enabled_in:
                with contextlib.suppress(Exception):
                    sm.send_ack()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.disconnect(wait=2.0), 5.0)
        else:
            self.client.cancel_connection_attempt()
            self.client.abort()
        self._lost.set()
        for task in (self._supervisor, *self._ready_tasks):
            if task is not None and not task.done():
                task.cancel()
        for task in (self._supervisor, *self._ready_tasks):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._supervisor = None
        # slixmpp leaves its outgoing-filter task running after a disconnect; end it so
        # nothing is left pending when the event loop closes.
        filters = getattr(self.client, "_run_out_filters", None)
        if isinstance(filters, asyncio.Future) and not filters.done():
            filters.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await filters

    async def __aenter__(self) -> XmppConnection:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def cut(self) -> None:
        """Drop the TCP connection abruptly (tests and chaos drills)."""
        transport = self.client.transport
        if transport is not None:
            transport.abort()

    # ----------------------------------------------------------------- supervision
    async def _supervise(self) -> None:
        attempt = 0
        while not self._closing:
            self._lost.clear()
            log.info("connecting to %s:%d as %s", self.settings.host, self.settings.port,
                     self.client.boundjid.bare)
            self.client.connect(host=self.settings.host, port=self.settings.port)
            await self._lost.wait()
            self.client.cancel_connection_attempt()
            if self._closing:
                break
            if self._auth_failed and self._no_tls:
                raise XmppError(
                    f"the XMPP server {self.settings.host}:{self.settings.port} offered no "
                    f"TLS, so the credentials of {self.account.bare} were not sent; enable "
                    "TLS on the server (xmpp.loopback_plaintext = true is only for a "
                    "development server on loopback)"
                )
            if self._auth_failed:
                raise XmppError(
                    f"the server refused the credentials of {self.account.bare} "
                    "(check the account and password)"
                )
            if self.ready.is_set():
                attempt = 0
            self.ready.clear()
            delay = min(self.settings.reconnect_max_delay, 0.25 * 2**attempt)
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
            attempt += 1
            log.warning("XMPP connection of %s lost; reconnecting in %.2f s (attempt %d)",
                        self.account.bare, delay, attempt)
            await asyncio.sleep(delay)

    def _on_connection_failed(self, reason: Any) -> None:
        self._last_error = str(reason)[:300]
        self._on_lost(reason)

    def _on_bad_certificate(self, exc: Any) -> None:
        """STARTTLS handshake refused the server's certificate. slixmpp disconnects
        only when nobody handles this event, so do what it would, and keep the reason."""
        self._last_error = f"TLS certificate refused: {exc}"[:300]
        log.error("%s:%d: %s (xmpp.ca_file names a private CA)", self.settings.host,
                  self.settings.port, self._last_error)
        self.client.disconnect()

    def _on_lost(self, reason: Any) -> None:
        if self.ready.is_set():
            self.drops += 1
        self.ready.clear()
        self._lost.set()

    def _on_auth_failed(self, _: Any) -> None:
        self._auth_failed = True
        self._no_tls = not self.settings.loopback_plaintext and not self._encrypted()
        self.client.abort()
        self._lost.set()

    def _encrypted(self) -> bool:
        """True when this stream runs over TLS (STARTTLS done, or direct TLS).

        Why: without TLS slixmpp refuses every SASL mechanism (we never allow unencrypted
        ones unless the server is marked loopback-dev) and reports it as a failed login.
        Telling the two apart turns "check the password" into the real reason: the
        server, or something between us and it, offered no TLS.
        """
        c = self.client
        return "starttls" in c.features or isinstance(c.socket, ssl.SSLSocket | ssl.SSLObject)

    def _on_stream_error(self, error: Any) -> None:
        log.warning("stream error from server: %s", error["condition"] if error else error)

    def _on_session_start(self, _: Any) -> None:
        self._ready(resumed=False)

    def _on_session_resumed(self, _: Any) -> None:
        self._ready(resumed=True)

    def _ready(self, resumed: bool) -> None:
        if not resumed:
            self.client.send_presence(ppriority=self.priority)
        self.sessions += 1
        log.info("XMPP session %s as %s", "resumed" if resumed else "established", self.jid)
        self.ready.set()
        for callback in self._ready_callbacks:
            task = asyncio.create_task(self._run_ready(callback, resumed))
            self._ready_tasks.add(task)
            task.add_done_callback(self._ready_tasks.discard)

    async def _run_ready(self, callback: ReadyCallback, resumed: bool) -> None:
        try:
            await callback(resumed)
        except asyncio.CancelledError:
            raise
        except NotConnected:
            log.info("session-ready work interrupted by a new disconnect; will rerun")
        except Exception:
            log.exception("session-ready callback %r failed", callback)

    # ----------------------------------------------------------------- requests
    async def wait_ready(self, timeout: float) -> None:
        if self.ready.is_set():
            return
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            raise NotConnected(
                f"not connected to the XMPP server {self.settings.host}:{self.settings.port}"
            ) from None

    async def iq(
        self, to: str, kind: str, payload: ET.Element, *, timeout: float | None = None,
        wait_connected: float = 0.0,
    ) -> ET.Element:
        """Send an IQ with a raw payload; return the raw result element.

        Raises :class:`NotConnected` when no session is up (after waiting up to
        ``wait_connected`` s), :class:`XmppTimeout`, or :class:`XmppRefused` with the
        server's error condition.
        """
        await self.wait_ready(wait_connected)
        iq = self.client.Iq()
        iq["type"] = kind
        iq["to"] = to
        iq.xml.append(payload)
        try:
            result = await iq.send(  # type: ignore[no-untyped-call]
                timeout=timeout or self.settings.request_timeout)
        except IqError as exc:
            raise refused(exc.iq.xml) from None
        except IqTimeout:
            if not self.ready.is_set():
                raise NotConnected("the XMPP connection dropped before the server answered") \
                    from None
            raise XmppTimeout(f"no answer from {to} within "
                              f"{timeout or self.settings.request_timeout:.0f} s") from None
        except slixmpp.xmlstream.xmlstream.NotConnectedError:
            raise NotConnected("not connected to the XMPP server") from None
        return result.xml  # type: ignore[no-any-return]

    def send_message(self, to: str, body: str, kind: str = "chat") -> None:
        if not self.ready.is_set():
            raise NotConnected("not connected to the XMPP server")
        self.client.send_message(mto=slixmpp.JID(to), mbody=body, mtype=kind)  # type: ignore[arg-type]


def refused(iq_xml: ET.Element) -> XmppRefused:
    """Read an IQ error (any namespace: components get jabber:component:accept)."""
    condition, text, app = "undefined-condition", "", ""
    for child in iq_xml:
        if child.tag.rsplit("}", 1)[-1] != "error":
            continue
        for sub in child:
            ns, _, tag = sub.tag[1:].partition("}")
            if ns == STANZA_NS:
                if tag == "text":
                    text = (sub.text or "")[:300]
                else:
                    condition = tag
            else:
                app = tag
    return XmppRefused(condition, text or app)

