"""``backchannel demo``: the whole system on one machine, with nothing to sign up for.

Starts a managed Prosody, the worker, gateway and bot, the demo site that receives
callbacks, and simulated sites publishing at a gentle rate (half over XMPP, half through
the HTTP gateway). Embedded defaults: offline geocoder, CRM and mailing list recording
into the local store. ``--chaos FILE`` swaps in the simulator's fake outside services
with the latency, errors and outages the profile describes.

``--check`` publishes a fixed number of events end to end and exits 0 when every one
has a result, a callback applied at the demo site and, for registrations, a signup on
the feed; 1 otherwise, saying what is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import time
from pathlib import Path
from typing import Any

from backchannel import config
from backchannel.app import Runtime, start_components
from backchannel.errors import BackchannelError, ConfigError, UsageExit
from backchannel.localserver import managed_server
from simulator.demosite import DemoSite
from simulator.sites import SimPlan, Simulator, SiteIdentity
from simulator.stack import (
    SITE_NAME,
    SITE_SECRET,
    SITE_SOURCE,
    WEBHOOK_SECRET,
    StackOptions,
    stack_toml,
)

log = logging.getLogger(__name__)

COMPONENTS = ["worker", "gateway", "bot"]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cmd_demo(args: argparse.Namespace) -> int:
    if args.events <= 0 or args.rate <= 0:
        raise UsageExit("backchannel demo: --events and --rate must be positive")
    if args.port and not _port_free(args.port):
        raise ConfigError(f"port {args.port} is in use; pick another with --port")
    return asyncio.run(run_demo(args))


async def run_demo(args: argparse.Namespace) -> int:
    folder = Path(args.dir).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    say(f"starting the managed XMPP server in {folder / 'server'} ...")
    server = managed_server("prosody", folder / "server")
    state = await asyncio.to_thread(server.start)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            services_url = None
            if args.chaos:
                from simulator.chaos import load_profile
                from simulator.services import FakeServices

                services = FakeServices(chaos=load_profile(args.chaos))
                await stack.enter_async_context(services)
                services_url = services.url
            site = DemoSite(secret=WEBHOOK_SECRET, title="Demo shop")
            await stack.enter_async_context(site)
            run_id = "check" if args.check else "demo"
            text = stack_toml(state, StackOptions(
                var_dir=str(folder / run_id), services_url=services_url, site_url=site.url,
                gateway_port=0 if args.check else args.port, fast_retries=args.check,
                geocoder="offline",
                # Separate nodes, so a check never replays into the demo's feeds or back.
                node_prefix="backchannel-check" if args.check else "backchannel"))
            cfg_file = folder / "backchannel.toml"
            cfg_file.write_text(text)
            cfg_file.chmod(0o600)
            settings = config.load(cfg_file)
            from backchannel.xmpp_tools import bootstrap_nodes

            reports = await bootstrap_nodes(settings)
            failed = [r for r in reports if r.action == "failed"]
            if failed:
                raise BackchannelError("node bootstrap failed: " + "; ".join(
                    line for r in failed for line in r.lines()))
            runtime = Runtime(settings)
            await start_components(runtime, stack, COMPONENTS)
            gateway_url = runtime.gateway.url
            rate = max(args.rate, 25.0) if args.check else args.rate
            plan = SimPlan(rate=rate, count=args.events if args.check else 0,
                           transport="both", seed=int(time.time()))
            sim = Simulator(settings, plan, [SiteIdentity(SITE_NAME, SITE_SOURCE, SITE_SECRET)],
                            gateway_url=gateway_url)
            if args.check:
                return await check(runtime, site, sim, args.events, time.monotonic() - t0)
            banner(state, settings, gateway_url, site.url, cfg_file, time.monotonic() - t0)
            sim_task = asyncio.create_task(sim.run(stop))
            await stop.wait()
            say("stopping ...")
            sim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sim_task
        return 0
    finally:
        await asyncio.to_thread(server.stop)
        say("stopped cleanly")


def say(text: str) -> None:
    print(text, flush=True)


def banner(state: Any, settings: config.Settings, gateway_url: str, site_url: str,
           cfg_file: Path, took: float) -> None:
    operator = settings.account("operator")
    bot = settings.account("bot")
    say(f"""
backchannel demo is up ({took:.1f} s)

  Dashboard (map, activity, rates):  {gateway_url}/
  Demo site (callbacks it received): {site_url}/
  Metrics:                           {gateway_url}/metrics

  Chat with the bot from any Jabber client (Gajim, Dino, Profanity...):
    server  127.0.0.1 port {settings.xmpp.port} (plaintext: loopback only)
    login   {operator.jid}   password {operator.password.reveal()}
    bot     {bot.jid}   say: status, help, subscribe signups

  Publish your own:  .venv/bin/backchannel publish user.registered -c {cfg_file} \\
                       --source {SITE_SOURCE} --data '{{"name": "Amy", "address": "Lyon, France"}}'

Simulated sites publish a few events per second. Ctrl-C stops everything.
""")


async def check(runtime: Runtime, site: DemoSite, sim: Simulator, count: int,
                startup: float) -> int:
    """Publish ``count`` events and verify every one went all the way through."""
    say(f"demo check: everything up in {startup:.1f} s; publishing {count} events ...")
    t0 = time.monotonic()
    stats = await sim.run()
    if stats.failed:
        say(f"FAIL: {stats.failed} of {count} events were not accepted")
        return 1
    worker = runtime.worker
    ids = set(stats.ids)
    registrations = stats.by_type.get("user.registered", 0)
    deadline = time.monotonic() + 90
    missing: list[str] = []
    while time.monotonic() < deadline:
        rows = {i: worker.store.event(i) for i in ids}
        unfinished = [i for i, r in rows.items() if r is None or r.state not in ("done",)]
        routed = {i for i, r in rows.items()
                  if r is not None and r.type in ("user.registered", "user.profile_changed",
                                                  "user.logged_in")}
        not_applied = [i for i in routed if i not in site.applied]
        missing = []
        if unfinished:
            missing.append(f"{len(unfinished)} events without a result")
        if not_applied:
            missing.append(f"{len(not_applied)} callbacks not applied at the demo site")
        if not missing and await worker.outbox.flush(10):
            break
        await asyncio.sleep(0.2)
    else:
        say("FAIL: " + "; ".join(missing or ["outbox not flushed"]))
        return 1
    signups = await worker.pubsub.items(runtime.settings.nodes.feed("signups"),
                                        max_items=max(registrations * 2, 10))
    signup_ids = {i.id for i in signups} & ids
    if len(signup_ids) < registrations:
        say(f"FAIL: {registrations - len(signup_ids)} registrations missing from the "
            "signups feed")
        return 1
    took = time.monotonic() - t0
    say(f"OK: {count} events ({registrations} registrations) processed end to end in "
        f"{took:.1f} s: results, callbacks applied once at the demo site "
        f"({len(site.applied)} applied, {site.duplicates} duplicates ignored), signups feed")
    return 0

