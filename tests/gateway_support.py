"""Helpers shared by the gateway tests: two registered sites, signed requests, an SSE reader."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from backchannel.config import Secret, Settings, Site
from backchannel.metrics import Metrics
from gateway.app import Gateway
from gateway.auth import signed_headers
from pubsub.connection import XmppConnection
from pubsub.envelope import new_id

SHOP = Site(name="shop", source="https://shop.example.com", secret=Secret("shop-secret"),
            token=Secret("shop-token"))
BLOG = Site(name="blog", source="https://blog.example.com", secret=Secret("blog-secret"))
NO_SECRET = Site(name="pull", source="https://pull.example.com")


def with_sites(settings: Settings, **gateway: Any) -> Settings:
    return replace(settings, sites=(SHOP, BLOG, NO_SECRET),
                   gateway=replace(settings.gateway, port=0, **gateway))


def event_doc(source: str = SHOP.source, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "specversion": "1.0", "id": new_id(), "source": source, "type": "user.registered",
        "time": "2026-12-04T15:00:00Z", "datacontenttype": "application/json",
        "data": {"user_id": "42", "name": "Amy", "address": "Toluca Lake, CA"},
    }
    doc.update(overrides)
    return doc


def encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def signed(body: bytes, site: Site = SHOP, now: float | None = None,
           content_type: str | None = "application/json") -> dict[str, str]:
    headers = signed_headers(site.name, site.secret.reveal(), body, now)
    if content_type:
        headers["Content-Type"] = content_type
    return headers


async def post_events(session: aiohttp.ClientSession, url: str, body: Any, *,
                      site: Site = SHOP, headers: Mapping[str, str] | None = None,
                      now: float | None = None) -> tuple[int, Any, Mapping[str, str]]:
    raw = encode(body)
    sent = dict(headers) if headers is not None else signed(raw, site, now)
    async with session.post(f"{url}/v1/events", data=raw, headers=sent) as response:
        text = await response.text()
        payload = json.loads(text) if text else None
        return response.status, payload, response.headers


@asynccontextmanager
async def running(settings: Settings, conn: XmppConnection, *, metrics: Metrics | None = None,
                  **kwargs: Any) -> AsyncIterator[Gateway]:
    async with Gateway(settings, conn, metrics=metrics or Metrics(), **kwargs) as gateway:
        yield gateway


async def read_sse(response: aiohttp.ClientResponse, count: int, timeout: float = 10.0
                   ) -> list[tuple[str, dict[str, Any]]]:
    """The next ``count`` feed messages (id, CloudEvent) of an SSE stream."""
    out: list[tuple[str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(out) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"got {len(out)} of {count} SSE messages in {timeout} s")
        line = await asyncio.wait_for(response.content.readline(), remaining)
        if not line:
            raise AssertionError(f"stream ended after {len(out)} of {count} messages")
        text = line.decode().rstrip("\n")
        if text == "":
            if fields.get("event") == "feed":
                out.append((fields["id"], json.loads(fields["data"])))
            fields = {}
        elif not text.startswith(":"):
            name, _, value = text.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
    return out


STATIC = Path(__file__).resolve().parents[1] / "gateway" / "static"
