"""Per-site authentication of HTTP requests: HMAC signatures, or a bearer token.

Why HMAC over timestamp and body: the secret never travels, a captured request cannot be
altered, and it can only be replayed inside the tolerance window (replaying an event is
harmless anyway: the event id makes it idempotent downstream). The scheme is the one
GitHub and Stripe use, so every language has the three lines it needs::

    X-Backchannel-Site: shop
    X-Backchannel-Timestamp: 1733324400
    X-Backchannel-Signature: v1=<hex HMAC-SHA256(secret, "1733324400." + body)>

Several ``v1=`` values may be sent, separated by commas or spaces (secret rotation).
A site with a ``token`` may instead send ``Authorization: Bearer <token>`` (simpler, but
the token is a password on the wire: HTTPS only).

Each refusal says which check failed, but never which sites exist: an unknown name and a
site without a signing secret get the same "unknown site" answer, and every comparison of
secret material runs in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from backchannel.config import Site
from gateway.problems import Problem

log = logging.getLogger(__name__)

HEADER_SITE = "X-Backchannel-Site"
HEADER_TIMESTAMP = "X-Backchannel-Timestamp"
HEADER_SIGNATURE = "X-Backchannel-Signature"
SIGNATURE_VERSION = "v1"

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="backchannel"'}
_DUMMY_KEY = b"backchannel-no-such-site"


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Backchannel-Signature`` value for ``body`` sent at ``timestamp``."""
    message = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signed_headers(site: str, secret: str, body: bytes, now: float | None = None
                   ) -> dict[str, str]:
    """The three headers that authenticate ``body`` for ``site`` (clients and tests)."""
    timestamp = int(time.time() if now is None else now)
    return {
        HEADER_SITE: site,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: signature(secret, timestamp, body),
    }


def _unauthorized(kind: str, detail: str) -> Problem:
    return Problem(401, kind, detail, headers=_CHALLENGE)


class Authenticator:
    """Decides which registered site sent a request, or refuses it with a 401 problem."""

    def __init__(self, sites: Iterable[Site], tolerance: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.sites = {site.name: site for site in sites}
        self.tolerance = tolerance
        self.clock = clock

    def authenticate(self, headers: Mapping[str, str], body: bytes) -> Site:
        """The site that signed ``body`` (or owns the bearer token). Raises :class:`Problem`."""
        authorization = headers.get("Authorization")
        if authorization is not None:
            return self._bearer(authorization, headers.get(HEADER_SITE))
        name = headers.get(HEADER_SITE)
        if name is None:
            raise _unauthorized(
                "missing-credentials",
                f"no credentials: send {HEADER_SITE}, {HEADER_TIMESTAMP} and "
                f"{HEADER_SIGNATURE} headers, or Authorization: Bearer <token>",
            )
        return self._hmac(name, headers, body)

    # ------------------------------------------------------------------ HMAC
    def _hmac(self, name: str, headers: Mapping[str, str], body: bytes) -> Site:
        site = self.sites.get(name)
        key = site.secret.reveal().encode("utf-8") if site is not None else b""
        raw_timestamp = headers.get(HEADER_TIMESTAMP)
        offered = headers.get(HEADER_SIGNATURE)
        if not key:
            # Spend the same work as for a real site before saying no.
            hmac.new(_DUMMY_KEY, body, hashlib.sha256).digest()
            raise _unauthorized("unknown-site", "unknown site")
        if raw_timestamp is None:
            raise _unauthorized("missing-timestamp", f"missing {HEADER_TIMESTAMP} header "
                                                     "(unix time in seconds)")
        if offered is None:
            raise _unauthorized("missing-signature", f"missing {HEADER_SIGNATURE} header")
        stripped = raw_timestamp.strip()
        if not stripped.isascii() or not stripped.isdigit() or len(stripped) > 12:
            raise _unauthorized("bad-timestamp",
                                f"{HEADER_TIMESTAMP} must be unix time in whole seconds")
        candidates = [c for c in offered.replace(",", " ").split()
                      if c.startswith(f"{SIGNATURE_VERSION}=")]
        if not candidates:
            raise _unauthorized(
                "bad-signature",
                f"{HEADER_SIGNATURE} must be '{SIGNATURE_VERSION}=' followed by the hex "
                "HMAC-SHA256 of '<timestamp>.<body>'",
            )
        expected = hmac.new(key, f"{stripped}.".encode() + body, hashlib.sha256).hexdigest()
        matched = False
        for candidate in candidates:
            value = candidate[len(SIGNATURE_VERSION) + 1:].lower()
            # No early exit: every candidate is compared, each in constant time.
            if hmac.compare_digest(value.encode("ascii", "replace"), expected.encode("ascii")):
                matched = True
        if not matched:
            raise _unauthorized(
                "bad-signature",
                "signature does not match: sign the exact bytes of the body as "
                "HMAC-SHA256(secret, '<timestamp>.<body>') in lower-case hex",
            )
        skew = self.clock() - int(stripped)
        if abs(skew) > self.tolerance:
            direction = "old" if skew > 0 else "in the future"
            raise _unauthorized(
                "stale-timestamp",
                f"timestamp is {abs(skew):.0f} s {direction}; the tolerance is "
                f"{self.tolerance:g} s (check the sender's clock)",
            )
        assert site is not None
        return site

    # ------------------------------------------------------------------ bearer
    def _bearer(self, authorization: str, claimed: str | None) -> Site:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("bad-authorization",
                                "Authorization must be 'Bearer <token>'")
        offered = token.encode("utf-8", "replace")
        found: Site | None = None
        for site in self.sites.values():
            secret = site.token.reveal().encode("utf-8")
            # Compare against every site (no early exit), each in constant time.
            if secret and hmac.compare_digest(offered, secret):
                found = site
        if found is None or (claimed is not None and claimed != found.name):
            raise _unauthorized("bad-token", "invalid bearer token")
        return found
