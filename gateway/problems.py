"""RFC 9457 problem details: every error the gateway answers is one of these.

Why one module: a site developer debugging an integration reads ``detail`` and nothing
else, so each refusal names the specific rule it broke ("timestamp is 612 s away from the
server clock; the tolerance is 300 s"), and ``type`` is a stable identifier a client can
branch on. The types are listed in ``docs/sites.md``.

Handlers raise :class:`Problem`; :func:`problem_middleware` turns it (and aiohttp's own
404/405/413) into an ``application/problem+json`` response. Anything else that escapes a
handler is logged with its traceback and answered with a bare 500 that says nothing about
the cause: exception text never reaches an HTTP client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:backchannel:problem:"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class Problem(Exception):
    """An HTTP error with a specific, client-safe explanation.

    ``kind`` is the short name that ends the ``type`` URI (``bad-signature``); ``extra``
    members are added to the JSON object (RFC 9457 extension members).
    """

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": TYPE_PREFIX + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body

    def response(self, instance: str | None = None) -> web.Response:
        text = json.dumps(self.to_dict(instance), ensure_ascii=False)
        response = web.Response(status=self.status, text=text, content_type=CONTENT_TYPE,
                                charset="utf-8")
        response.headers.update(self.headers)
        return response


def from_http_exception(exc: web.HTTPException) -> Problem:
    """aiohttp's own refusals (no route, wrong method, body too large) as problems."""
    status = exc.status
    if status == 404:
        return Problem(404, "not-found", "no such resource")
    if status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
        headers = {"Allow": ",".join(allowed)} if allowed else {}
        return Problem(405, "method-not-allowed",
                       "method not allowed here" + (f"; use {', '.join(allowed)}"
                                                   if allowed else ""),
                       headers=headers)
    if status == 413:
        return Problem(413, "body-too-large", "request body is larger than the gateway accepts")
    return Problem(status, "http-error", exc.reason or _TITLES.get(status, "error"),
                   title=exc.reason or None)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return from_http_exception(exc).response(request.path)
    except Exception:
        # Logged here with the traceback; the client learns only that it was our fault.
        log.exception("unhandled error answering %s %s", request.method, request.path)
        return Problem(500, "internal-error",
                       "the gateway failed to handle this request; it has been logged"
                       ).response(request.path)
