"""Standard Webhooks 1.0: signing what we send, and checking it on the receiving side.

A site registered for ``protocol = "webhook"`` gets a JSON POST carrying three headers:
``webhook-id`` (the event id, stable across retries, so the site can use it as its
idempotency key), ``webhook-timestamp`` (unix seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``). We follow the spec to the
letter so sites can verify us with any Standard Webhooks library; :func:`verify` is the
receiving half, used by the simulator's demo site and by the tests.

Secrets in the spec's ``whsec_<base64>`` form are decoded; any other string is used as
its UTF-8 bytes (what the reference library does for plain secrets).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping

from backchannel.errors import CallbackRefused

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE = 300  # seconds either side of now, as the spec recommends

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


def secret_bytes(secret: str) -> bytes:
    """The HMAC key a secret stands for (``whsec_`` base64 decoded, else UTF-8)."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError) as exc:
            # Never echo the secret itself.
            raise CallbackRefused(
                "webhook secret starts with whsec_ but the rest is not valid base64"
            ) from exc
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message: ``v1,<base64>``."""
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def build_headers(
    secret: str, msg_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` sent at ``now`` (default: now)."""
    timestamp = int(time.time() if now is None else now)
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: sign(secret, msg_id, timestamp, body),
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    # Plain dicts are case-sensitive; HTTP header names are not.
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a received webhook; return quietly if it is genuine and fresh.

    Raises :class:`CallbackRefused` saying which check failed: a missing header, a
    timestamp that is not a number or is more than ``tolerance`` seconds away from
    ``now``, or no matching ``v1`` signature among the space-separated ones offered.
    """
    msg_id = _header(headers, HEADER_ID)
    raw_timestamp = _header(headers, HEADER_TIMESTAMP)
    offered = _header(headers, HEADER_SIGNATURE)
    for name, value in (
        (HEADER_ID, msg_id),
        (HEADER_TIMESTAMP, raw_timestamp),
        (HEADER_SIGNATURE, offered),
    ):
        if not value:
            raise CallbackRefused(f"webhook verification failed: missing {name} header")
    assert msg_id is not None and raw_timestamp is not None and offered is not None
    if not msg_id.isascii() and not _encodable(msg_id):
        # A non-UTF-8 byte in a received header arrives as a lone surrogate.
        raise CallbackRefused("webhook verification failed: webhook-id is not UTF-8 text")
    try:
        timestamp = int(raw_timestamp)
    except ValueError as exc:
        raise CallbackRefused(
            "webhook verification failed: webhook-timestamp is not an integer"
        ) from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise CallbackRefused(
            f"webhook verification failed: timestamp is {current - timestamp:+.0f} s "
            f"from now (tolerance {tolerance:g} s)"
        )
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1].encode("ascii")
    matched = False
    for candidate in offered.split():
        version, _, value = candidate.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        # Compare every candidate (no early exit) in constant time per comparison.
        if hmac.compare_digest(value.encode("ascii", "replace"), expected):
            matched = True
    if not matched:
        raise CallbackRefused("webhook verification failed: no matching signature")
