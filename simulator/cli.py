"""``backchannel simulate``: fake sites (and optionally fake outside services) on demand.

Against a running backchannel (its config file): N fake sites publish realistic events at
a rate, for a duration or a count, steady or bursty, over XMPP and/or the HTTP gateway.
With ``--services`` it also runs the fake outside services (Nominatim-compatible
geocoder, CRM, mailing list; misbehaving as ``--chaos FILE`` says) and the demo site that
receives callbacks, and prints their URLs to put in the config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import Any

from backchannel.config import Settings
from backchannel.errors import ConfigError, UsageExit
from simulator.sites import SimPlan, SimStats, Simulator, SiteIdentity


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate", help="fake sites publishing events; fake outside services",
        description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("-c", "--config", metavar="FILE", help="config of the running backchannel")
    p.add_argument("--site", action="append", metavar="NAME",
                   help="registered site to act as (repeatable; default: every registered "
                        "site, up to --sites)")
    p.add_argument("--rate", type=float, default=5.0, help="events per second (default 5)")
    p.add_argument("--duration", type=float, default=0.0,
                   help="seconds to run (default: until --count or Ctrl-C)")
    p.add_argument("--count", type=int, default=0, help="events to send (default: no limit)")
    p.add_argument("--transport", choices=["xmpp", "http", "both"], default="xmpp",
                   help="how sites publish (http/both need --gateway; default xmpp)")
    p.add_argument("--gateway", metavar="URL", help="gateway base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--bursty", action="store_true", help="10x bursts of 2 s every 15 s")
    p.add_argument("--sites", type=int, default=3,
                   help="how many registered sites publish (default 3, or fewer if fewer are "
                        "registered)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--services", action="store_true",
                   help="also run fake outside services and the demo site")
    p.add_argument("--chaos", metavar="FILE", help="chaos profile for --services "
                                                   "(see simulator/chaos.example.toml)")


def check_args(args: argparse.Namespace) -> None:
    if args.rate <= 0:
        raise UsageExit("backchannel simulate: --rate must be positive")
    if args.duration < 0 or args.count < 0 or args.sites < 1:
        raise UsageExit("backchannel simulate: --duration and --count must not be negative, "
                        "--sites at least 1")
    if args.transport in ("http", "both") and not args.gateway:
        raise UsageExit(f"backchannel simulate: --transport {args.transport} needs --gateway URL")
    if args.chaos and not args.services:
        raise UsageExit("backchannel simulate: --chaos applies to --services; add --services")


def cmd_simulate(args: argparse.Namespace) -> int:
    from backchannel.cli import load_settings

    check_args(args)
    settings = load_settings(args.config)
    chosen = list(settings.sites[: args.sites])
    if args.site:
        chosen = []
        for name in args.site:
            site = settings.site_by_name(name)
            if site is None:
                raise ConfigError(f"no site {name!r} registered", file=settings.source_file,
                                  key="sites")
            chosen.append(site)
    if not chosen:
        raise ConfigError("no site is registered ([[sites]] in the config)",
                          file=settings.source_file, key="sites")
    for site in chosen:
        if args.transport != "xmpp" and not site.secret:
            raise ConfigError("the site has no ingest secret, needed to sign HTTP posts",
                              file=settings.source_file, key=f"sites.{site.name}.secret")
    sites = [SiteIdentity(s.name, s.source, s.secret.reveal()) for s in chosen]
    return asyncio.run(run(settings, args, sites))


async def run(settings: Settings, args: argparse.Namespace, sites: list[SiteIdentity]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if args.services:
            from simulator.chaos import load_profile
            from simulator.demosite import DemoSite
            from simulator.services import FakeServices
            from simulator.stack import WEBHOOK_SECRET

            services = FakeServices(chaos=load_profile(args.chaos) if args.chaos else None)
            await stack.enter_async_context(services)
            demo = DemoSite(secret=WEBHOOK_SECRET)
            await stack.enter_async_context(demo)
            print(f"fake geocoder (Nominatim API): domain={services.geocoder_domain} "
                  f"scheme=http\nfake CRM: {services.crm_url}\n"
                  f"fake mailing list: {services.list_url('news')}\n"
                  f"demo site: XML-RPC {demo.xmlrpc_url}  webhook {demo.webhook_url} "
                  f"(webhook secret {WEBHOOK_SECRET})  page {demo.url}/", flush=True)
        plan = SimPlan(rate=args.rate, duration=args.duration, count=args.count,
                       transport=args.transport, bursty=args.bursty, seed=args.seed)
        sim = Simulator(settings, plan, sites, gateway_url=args.gateway)
        started = time.monotonic()

        def progress(stats: SimStats) -> None:
            elapsed = time.monotonic() - started
            total = f"/{args.count}" if args.count else ""
            print(f"\r{stats.sent}{total} sent, {stats.failed} failed, "
                  f"{stats.sent / max(elapsed, 1e-9):.1f}/s", end="", file=sys.stderr,
                  flush=True)

        names = ", ".join(s.name for s in sites)
        print(f"simulating {len(sites)} site(s) ({names}) at {args.rate:g} events/s "
              f"over {args.transport} (Ctrl-C to stop)", flush=True)
        stats = await sim.run(stop, progress)
        progress(stats)
        print(file=sys.stderr)
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(stats.by_type.items()))
        print(f"sent {stats.sent} events ({kinds or 'none'}), {stats.failed} failed",
              flush=True)
    return 1 if stats.failed else 0
