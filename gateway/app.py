"""The gateway component: one aiohttp server in front of the XMPP backbone.

Why a component class rather than a bare ``web.Application``: the gateway owns its
listening socket and its feed hub, opens them in :meth:`Gateway.start` and releases them
in :meth:`Gateway.close` (or ``async with``), like every other backchannel component. The
XMPP connection is lent to it: the caller starts and closes that.

Routes::

    POST /v1/events            ingest (gateway.ingest)
    GET  /v1/events/{id}       what became of an event (gateway.ops)
    GET  /v1/feeds/{feed}      Server-Sent Events (gateway.feeds)
    GET  /v1/status            component status for the dashboard
    GET  /healthz /readyz /metrics
    GET  /  and /static/...    the dashboard (gateway/static)
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web

from backchannel.config import Settings
from backchannel.errors import BackchannelError
from backchannel.metrics import Metrics
from gateway.auth import Authenticator
from gateway.feeds import HEARTBEAT, FeedHub, FeedStream
from gateway.ingest import Ingest
from gateway.ops import Ops, ProgressProvider, StatusProvider
from gateway.problems import Problem, problem_middleware
from pubsub.client import PubSub
from pubsub.connection import XmppConnection
from pubsub.publisher import Publisher

log = logging.getLogger(__name__)

DEFAULT_STATIC = Path(__file__).with_name("static")
SHUTDOWN_TIMEOUT = 5.0


class Gateway:
    """HTTP ingest, event status, SSE feeds, health, metrics and the dashboard."""

    def __init__(
        self,
        settings: Settings,
        conn: XmppConnection,
        *,
        metrics: Metrics,
        status_provider: StatusProvider | None = None,
        progress: ProgressProvider | None = None,
        static_dir: Path | None = None,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.settings = settings
        self.conn = conn
        self.metrics = metrics
        self.static_dir = (static_dir or DEFAULT_STATIC).resolve()
        self.pubsub = PubSub(conn, settings.xmpp.pubsub_service)
        self.publisher = Publisher(self.pubsub, max_bytes=settings.max_event_bytes)
        self.auth = Authenticator(settings.sites, settings.gateway.timestamp_tolerance)
        self.ingest = Ingest(settings, self.publisher, self.auth, metrics)
        self.hub = FeedHub(conn, self.pubsub, settings.nodes, metrics,
                           max_bytes=settings.max_event_bytes)
        self.ops = Ops(settings, conn, self.pubsub, self.auth, metrics, status_provider,
                       progress)
        self.app = self._build_app(heartbeat)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        if self._port is None:
            raise BackchannelError("the gateway is not started")
        return self._port

    @property
    def url(self) -> str:
        host = self.settings.gateway.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._closed:
            raise BackchannelError("a closed gateway cannot be started again")
        if self._runner is not None:
            return
        await self.hub.start()
        runner = web.AppRunner(self.app, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.gateway.host, self.settings.gateway.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            self.hub.close()
            raise BackchannelError(
                f"the gateway cannot listen on {self.settings.gateway.host}:"
                f"{self.settings.gateway.port}: {exc.strerror}") from exc
        self._runner = runner
        addresses = runner.addresses
        self._port = int(addresses[0][1]) if addresses else self.settings.gateway.port
        log.info("gateway listening on %s", self.url)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.hub.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("gateway stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # ------------------------------------------------------------------ routes
    def _build_app(self, heartbeat: float) -> web.Application:
        # aiohttp's own cap sits just above ours, so an oversized body meets our 413 first.
        app = web.Application(middlewares=[problem_middleware],
                              client_max_size=self.ingest.max_body + 1)
        app.on_shutdown.append(self._on_shutdown)
        whitelisted = self.settings.nodes.feed_access == "whitelist"
        feeds = FeedStream(self.hub, heartbeat=heartbeat, auth=self.auth if whitelisted else None)
        r = app.router
        r.add_post("/v1/events", self.ingest.handle)
        r.add_get("/v1/events/{id}", self.ops.event_status)
        r.add_get("/v1/feeds/{feed}", feeds.handle)
        r.add_get("/v1/status", self.ops.status)
        r.add_get("/healthz", self.ops.healthz)
        r.add_get("/readyz", self.ops.readyz)
        r.add_get("/metrics", self.ops.metrics_text)
        if self.static_dir.is_dir():
            r.add_get("/", self._index)
            r.add_static("/static/", self.static_dir)
            # index.html refers to its files relatively ("dashboard.js", "vendor/..."), so
            # they are also served next to "/".
            r.add_get("/{path:(?!v1/).+}", self._static_file)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        self.hub.close()  # ends every SSE stream, so shutdown does not wait for them

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(self.static_dir / "index.html")

    async def _static_file(self, request: web.Request) -> web.FileResponse:
        relative = request.match_info["path"]
        candidate = (self.static_dir / relative).resolve()
        if not candidate.is_relative_to(self.static_dir) or not candidate.is_file():
            raise Problem(404, "not-found", "no such resource")
        return web.FileResponse(candidate)
