"""Peak memory per component under the demo workload, and of the XMPP server.

Each component runs alone (``backchannel run --components worker|gateway|bot``) so its
``VmHWM`` (peak resident set size, from ``/proc/<pid>/status``) is its own; Prosody's is
read the same way. The workload is the demo's: simulated people registering and changing
their profiles (70/30), half through the gateway's signed HTTP ingest and half published
straight over XMPP, at a steady rate; the worker runs the demo configuration (offline
geocoder, local CRM and list adapters) and calls the demo site back. Goal: everything
together (every component plus Prosody) under 500 MB. One process hosting all three
components (the default ``backchannel run``) shares one interpreter, so it needs less
than the sum shown here.
"""

from __future__ import annotations

import asyncio
import random
import sys

import aiohttp

from backchannel.localserver.base import free_port
from benchmarks.common import (
    BenchServer,
    Child,
    ItemCounter,
    Options,
    Progress,
    Section,
    bootstrap_nodes,
    connection,
    peak_rss_mib,
    run_component,
    say,
    spawn,
)
from gateway.auth import signed_headers
from pubsub.client import PubSub
from pubsub.envelope import make_event
from pubsub.publisher import Publisher
from simulator.people import fake_event_data, fake_user
from simulator.stack import SITE_NAME, SITE_SECRET, SITE_SOURCE, StackOptions, stack_toml

NAME = "memory"
GOAL_MIB = 500.0
COMPONENTS = ("worker", "gateway", "bot")


async def workload(bs: BenchServer, n: int, rate: float) -> dict[str, float]:
    fakes = await spawn([sys.executable, "-m", "benchmarks.fakes"], "fakes", ready="ready")
    _, _, site_url = fakes.first_line.split()
    port = free_port()
    text = stack_toml(bs.state, StackOptions(var_dir=str(bs.dir / "var-memory"),
                                             site_url=site_url, gateway_port=port,
                                             node_prefix="mem"))
    path, settings = bs.write_config("memory.toml", text)
    children: dict[str, Child] = {}
    try:
        await bootstrap_nodes(settings)
        for name in COMPONENTS:
            children[name] = await run_component(path, name)
        rng = random.Random(3)  # noqa: S311 - test data
        users = [fake_user(rng) for _ in range(max(n // 3, 1))]
        kinds = ["user.registered" if rng.random() < 0.7 else "user.profile_changed"
                 for _ in range(n)]
        events = [make_event(k, SITE_SOURCE, fake_event_data(k, rng, rng.choice(users)))
                  for k in kinds]
        url = f"http://127.0.0.1:{port}/v1/events"
        async with connection(settings, "operator", "counter") as watch, \
                connection(settings, "site", "load") as load, aiohttp.ClientSession() as http:
            counter = ItemCounter(watch, settings.xmpp.pubsub_service, settings.nodes.results)
            await counter.start()
            publisher = Publisher(PubSub(load, settings.xmpp.pubsub_service))
            errors = 0

            async def send(i: int) -> None:
                nonlocal errors
                event = events[i]
                if i % 2:
                    await publisher.publish(settings.nodes.events, event, timeout=60)
                    return
                body = event.to_json().encode()
                headers = {**signed_headers(SITE_NAME, SITE_SECRET, body),
                           "Content-Type": "application/json"}
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    errors += response.status != 202

            loop = asyncio.get_running_loop()
            start = loop.time()
            tasks = []
            progress = Progress(f"demo workload at {rate:g}/s", n)
            for i in range(n):
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(i)))
                progress.update(i + 1)
            await asyncio.gather(*tasks)
            progress.close()
            if not await counter.wait_for(n, timeout=120):
                say(f"  memory: only {len(counter.arrived)}/{n} results before the deadline")
            if errors:
                say(f"  memory: {errors} ingest requests were not accepted")
        out = {name: child.peak_rss_mib() for name, child in children.items()}
        out["prosody"] = peak_rss_mib(bs.pid) if bs.pid else float("nan")
        out["results"] = float(len(counter.arrived))
        return out
    finally:
        for child in children.values():
            await child.stop()
        await fakes.stop()


def run(opts: Options) -> Section:
    n, rate = (300, 50.0) if opts.quick else (1000, 50.0)
    with BenchServer(prefix="bench-memory-") as bs:
        peaks = asyncio.run(workload(bs, n, rate))
    section = Section(NAME)
    total = 0.0
    for name in (*COMPONENTS, "prosody"):
        section.add(f"{name} peak RSS", peaks[name], "MiB")
        total += peaks[name]
    section.add("all together", total, "MiB", goal=f"< {GOAL_MIB:.0f}", ok=total < GOAL_MIB,
                note="sum of separate processes")
    section.notes.append(
        f"demo workload: {n} events at {rate:g}/s (70% registrations, 30% profile changes; "
        f"half over HTTP ingest, half over XMPP), {int(peaks['results'])} results seen; "
        "each component in its own process; VmHWM from /proc.")
    return section


def main() -> int:
    from benchmarks.common import print_table

    print_table([run(Options(quick="--quick" in sys.argv))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
