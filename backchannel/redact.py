"""Keep secrets out of log lines, including the ones libraries write.

Why: our own messages never format a secret (:class:`~backchannel.config.Secret` masks
itself), but libraries log what they are handed. At DEBUG (``backchannel -vv``) slixmpp
logs every stanza it sends, SASL included, and a PLAIN ``<auth>`` is the account password
in base64; geopy logs every request URL, and several geocoding providers (OpenCage,
Google, ...) put the API key in it. :class:`RedactingFilter` rewrites such records before
any handler (file, console, a test's capture) formats them:

- the content of every SASL element (auth, response, challenge, success) is replaced,
  whatever the mechanism and whether or not the password is known here;
- every secret value registered with :func:`remember` (each ``Secret`` of at least
  :data:`MIN_LENGTH` characters registers itself) is replaced, as written and URL-encoded.

The filter goes on those libraries' loggers as soon as a secret exists (so it works for
any logging setup), and the CLI puts it on its own handlers too (every logger).
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import quote, quote_plus

MASK = "********"
#: Shorter values are not masked by value: they would blank out ordinary words.
MIN_LENGTH = 8
#: Loggers that are known to write secret material at DEBUG.
LIBRARY_LOGGERS = ("slixmpp.xmlstream.xmlstream", "geopy")

_SASL = re.compile(
    r"(<(auth|response|challenge|success)\b[^>]*urn:ietf:params:xml:ns:xmpp-sasl[^>]*>)"
    r"[^<]*(</\2>)"
)
_lock = threading.Lock()
_forms: tuple[str, ...] = ()  # every masked form, longest first
_installed = False


def remember(value: str) -> None:
    """Mask ``value`` (and its URL-encoded forms) in every filtered log record from now on.

    The first call also puts the filter on :data:`LIBRARY_LOGGERS`.
    """
    global _forms, _installed
    with _lock:
        if not _installed:
            _installed = True
            for name in LIBRARY_LOGGERS:
                logging.getLogger(name).addFilter(RedactingFilter())
        if len(value) >= MIN_LENGTH:
            new = {value, quote(value, safe=""), quote_plus(value)} - set(_forms)
            if new:
                _forms = tuple(sorted((*_forms, *new), key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with SASL payloads and every remembered secret masked."""
    if "urn:ietf:params:xml:ns:xmpp-sasl" in text:
        text = _SASL.sub(rf"\1{MASK}\3", text)
    for form in _forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and traceback text) through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(handlers: list[logging.Handler]) -> None:
    """Put the filter on ``handlers`` too, so records of every logger pass through it."""
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
