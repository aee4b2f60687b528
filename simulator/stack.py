"""One configuration for a whole local stack: managed server, fake services, demo site.

The demo, the integration tests and the benchmarks all describe their world through
:func:`stack_toml`, so what the tests check is what the demo runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from backchannel.localserver import ServerState, config_toml

SITE_NAME = "shop"
SITE_SOURCE = "https://shop.example.com"
SITE_SECRET = "demo-ingest-secret"  # noqa: S105 - a fixed secret for the local demo only
WEBHOOK_SECRET = "whsec_ZGVtby13ZWJob29rLXNlY3JldC0xMjM0NTY3ODkw"  # noqa: S105


@dataclass(frozen=True)
class StackOptions:
    var_dir: str
    services_url: str | None = None  # FakeServices.url; None = offline geocoder + local adapters
    site_url: str | None = None  # DemoSite.url; None = no callbacks
    callback_protocol: str = "xmlrpc"
    node_prefix: str = "backchannel"
    gateway_port: int = 0
    fast_retries: bool = True
    geocoder: str = "nominatim"  # with services_url: "nominatim" (the fake) or "offline"
    max_attempts: int = 5
    extra: str = ""


def stack_toml(state: ServerState, opts: StackOptions) -> str:
    p = opts.node_prefix
    lines = [
        "[nodes]",
        f'events = "{p}.events"',
        f'results = "{p}.results"',
        f'deadletters = "{p}.deadletters"',
        f'feed_prefix = "{p}.feeds."',
        "",
        "[[sites]]",
        f'name = "{SITE_NAME}"',
        f'source = "{SITE_SOURCE}"',
        f'secret = "{SITE_SECRET}"',
        f'xmpp_publishers = ["{state.jid("site")}"]',
    ]
    if opts.site_url:
        path = "/xmlrpc" if opts.callback_protocol == "xmlrpc" else "/webhook"
        lines += [
            "[sites.callback]",
            f'url = "{opts.site_url}{path}"',
            f'protocol = "{opts.callback_protocol}"',
            f'secret = "{WEBHOOK_SECRET}"',
            "allow_private = true  # the demo site listens on loopback",
            "timeout = 5.0",
        ]
    lines.append("")
    retry = (f"max_attempts = {opts.max_attempts}\nbackoff_initial = 0.05\nbackoff_max = 0.5\n"
             "breaker_threshold = 5\nbreaker_reset = 0.5\ntimeout = 2.0\n"
             if opts.fast_retries else "")
    if opts.services_url:
        if opts.geocoder == "nominatim":
            domain = opts.services_url.removeprefix("http://") + "/geocoder"
            lines += ["[services.geocode]", 'provider = "nominatim"', f'domain = "{domain}"',
                      'scheme = "http"', 'user_agent = "backchannel-simulator"',
                      "concurrency = 16", retry]
        else:
            lines += ["[services.geocode]", 'provider = "offline"', retry]
        lines += ["[services.crm]", 'adapter = "http"',
                  f'url = "{opts.services_url}/crm/contacts"', "concurrency = 16", retry,
                  "[services.mailing_list]", 'adapter = "http"',
                  f'url = "{opts.services_url}/lists/news/members"', "concurrency = 16", retry]
    elif opts.fast_retries:
        for name in ("geocode", "crm", "mailing_list"):
            lines += [f"[services.{name}]", retry]
    base = config_toml(state, var_dir=opts.var_dir, gateway_port=opts.gateway_port)
    if opts.fast_retries:
        base = base.replace("[worker]\n", "[worker]\ncallback_time_scale = 0.002\n", 1)
    return base + "\n" + "\n".join(lines) + "\n" + opts.extra
