"""The ``crm`` and ``mailing_list`` tasks: push a user's fields to an outside system.

One task class, three adapters, chosen by ``services.<name>.adapter``; swapping is a
config change only:

- ``local`` (default): records into the worker's store, so the demo works offline;
- ``http``: a JSON POST to ``url`` with an ``auth_header`` value or an HMAC signature
  (``secret``: header ``X-Backchannel-Signature: sha256=<hex>`` over the body);
- ``xmlrpc``: ``method(struct)`` on ``url``.

``fields`` maps the outside system's field names to keys of the event's ``data``.
HTTP answers are classified once here: 2xx ok; 408, 429 and 5xx temporary (honouring
Retry-After); other 4xx permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import xmlrpc.client
from collections.abc import Mapping
from typing import Any

import aiohttp

from backchannel.config import Secret, ServiceSettings
from backchannel.errors import ConfigError, PermanentTaskError, TemporaryTaskError
from pubsub.envelope import Event
from workers.callbacks.client import parse_retry_after
from workers.callbacks.xmlrpc import parse_response, to_xmlrpc
from workers.tasks.base import TaskEnv

log = logging.getLogger(__name__)

MAX_RESPONSE = 65536
ADAPTERS = ("local", "http", "xmlrpc")


class SyncTask:
    """Sends selected fields of an event's data to one outside system."""

    default_fields: Mapping[str, str] = {}
    default_method = "sync.upsert"
    key_field = "user_id"
    required_field: str | None = None

    def __init__(self, name: str, settings: ServiceSettings, env: TaskEnv) -> None:
        self.name = name
        self.service = name
        self.env = env
        self.timeout = settings.timeout
        opts = dict(settings.options)
        key = f"services.{name}"

        def fail(option: str, message: str) -> ConfigError:
            return ConfigError(message, file=env.settings.source_file, key=f"{key}.{option}")

        self.adapter = str(opts.get("adapter", "local"))
        if self.adapter not in ADAPTERS:
            raise fail("adapter", f"must be one of {', '.join(ADAPTERS)}, got {self.adapter!r}")
        self.url = opts.get("url")
        if self.adapter != "local" and (not isinstance(self.url, str) or
                                        not self.url.startswith(("http://", "https://"))):
            raise fail("url", f"adapter {self.adapter!r} needs an http(s) URL")
        fields = opts.get("fields", self.default_fields)
        if not isinstance(fields, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in fields.items()):
            raise fail("fields", "must be a table of target field = data key")
        self.fields: Mapping[str, str] = fields
        self.method = str(opts.get("method", self.default_method))
        auth = opts.get("auth_header")
        secret = opts.get("secret")
        self.auth_header = auth if isinstance(auth, Secret) and auth else None
        self.secret = secret if isinstance(secret, Secret) and secret else None

    @classmethod
    def build(cls, name: str, settings: ServiceSettings, env: TaskEnv) -> SyncTask:
        return cls(name, settings, env)

    def payload(self, event: Event) -> dict[str, Any]:
        data = event.data if isinstance(event.data, dict) else {}
        out = {target: data[src] for target, src in self.fields.items()
               if data.get(src) not in (None, "")}
        return out

    async def run(self, event: Event) -> Mapping[str, Any]:
        payload = self.payload(event)
        if self.required_field and not payload.get(self.required_field):
            return {"skipped": f"no {self.required_field} in the event"}
        if not payload:
            return {"skipped": "none of the mapped fields is in the event"}
        if self.adapter == "local":
            data = event.data if isinstance(event.data, dict) else {}
            key = str(data.get(self.key_field) or payload.get(self.required_field or "") or
                      event.id)
            writes = self.env.store.record(self.name, key, payload)
            return {"adapter": "local", "key": key, "writes": writes}
        if self.adapter == "http":
            body = json.dumps(payload, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", "Idempotency-Key": event.id}
            answer = await self._post(body, headers)
            return {"adapter": "http", "status": answer[0]}
        body = xmlrpc.client.dumps((to_xmlrpc(payload),), methodname=self.method,
                                   encoding="utf-8").encode()
        status, text = await self._post(body, {"Content-Type": "text/xml",
                                                "Idempotency-Key": event.id})
        try:
            value = parse_response(text)
        except Exception as exc:  # CallbackError from the defused parser: a bad answer
            raise TemporaryTaskError(f"{self.name}: bad XML-RPC answer: {exc}") from exc
        return {"adapter": "xmlrpc", "status": status,
                "response": value if isinstance(value, str | int | float | bool) else None}

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        assert isinstance(self.url, str)
        if self.auth_header:
            headers["Authorization"] = self.auth_header.reveal()
        if self.secret:
            digest = hmac.new(self.secret.reveal().encode(), body, hashlib.sha256).hexdigest()
            headers["X-Backchannel-Signature"] = f"sha256={digest}"
        try:
            async with self.env.http.post(
                self.url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                text = await resp.content.read(MAX_RESPONSE + 1)
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise TemporaryTaskError(f"{self.name}: no answer within {self.timeout:g} s") \
                from exc
        except aiohttp.ClientError as exc:
            raise TemporaryTaskError(f"{self.name}: {type(exc).__name__}") from exc
        if 200 <= status < 300:
            if len(text) > MAX_RESPONSE:
                raise TemporaryTaskError(f"{self.name}: answer larger than {MAX_RESPONSE} bytes")
            return status, text
        if status in (408, 429) or status >= 500:
            raise TemporaryTaskError(f"{self.name}: HTTP {status}", retry_after=retry_after)
        raise PermanentTaskError(f"{self.name}: HTTP {status}")

    async def aclose(self) -> None:
        return None


class CrmTask(SyncTask):
    default_fields = {"external_id": "user_id", "email": "email", "name": "name",
                      "address": "address"}
    default_method = "crm.upsert_contact"


class MailingListTask(SyncTask):
    default_fields = {"email": "email", "name": "name"}
    default_method = "list.subscribe"
    key_field = "email"
    required_field = "email"
