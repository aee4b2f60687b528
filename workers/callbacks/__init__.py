"""The responder's HTTP side: calling a site back with its result.

``client`` makes one guarded attempt (``guard``: registered endpoint only, public
addresses only, no redirects) in the site's protocol: ``xmlrpc`` (what Drupal's Services
module speaks) or ``webhook`` (Standard Webhooks 1.0 signed JSON).
"""

from .client import (
    CallbackClient,
    DeliveryReport,
    backoff_schedule,
    next_delay,
    parse_retry_after,
)
from .guard import GuardedResolver, check_destination
from .webhook import build_headers, sign, verify
from .xmlrpc import build_call, parse_response

__all__ = [
    "CallbackClient",
    "DeliveryReport",
    "GuardedResolver",
    "backoff_schedule",
    "build_call",
    "build_headers",
    "check_destination",
    "next_delay",
    "parse_response",
    "parse_retry_after",
    "sign",
    "verify",
]
