"""Raw PubSub ceiling: our Publisher + Consumer against bare slixmpp, in the same run.

What is compared (same server, same node configuration, same events, same window):

- ours: :class:`pubsub.publisher.Publisher` publishes, a :class:`pubsub.consumer.Consumer`
  (durable :class:`pubsub.seen.SeenStore` on a temp SQLite file, events decoded and
  validated) receives;
- bare: a plain ``slixmpp.ClientXMPP`` publishes with ``xep_0060.publish`` and another
  receives through a ``pubsub_publish`` handler that reads
  ``m['pubsub_event']['items']['item']`` and parses the JSON payload.

Runs alternate (ours, bare, ours, bare ...) and each gets a fresh node, so neither
profits from a warmer or emptier node. Throughput is events from the first publish to the
last notification; latency is from the start of a publish to its notification. Bare's
throughput is the "raw PubSub ceiling" the pipeline benchmark divides by.

    .venv/bin/python -m benchmarks.pubsub_ceiling [--quick]
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import slixmpp

from backchannel import config
from benchmarks.common import (
    BenchServer,
    Options,
    Progress,
    Section,
    connection,
    create_node,
    median,
    percentile,
    publish_window,
    say,
)
from pubsub.client import PubSub
from pubsub.consumer import Consumer
from pubsub.envelope import JSON_NS, Event, make_event
from pubsub.publisher import Publisher
from pubsub.seen import SeenStore

NAME = "pubsub_ceiling"
GOAL = 0.9
SOURCE = "https://bench.example.com"
WINDOW = 32
_nodes = itertools.count()


@dataclass
class RunResult:
    variant: str
    sent: int
    received: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else float("nan")


def events(n: int) -> list[Event]:
    return [make_event("user.registered", SOURCE, {
        "user_id": str(i), "name": f"User {i}", "email": f"u{i}@example.com",
        "address": "Toluca Lake, CA"}) for i in range(n)]


async def fresh_node(settings: config.Settings, n: int) -> str:
    node = f"bench.ceiling.{next(_nodes)}"
    await create_node(settings, node, max_items=max(n, 1000),
                      publishers=[settings.account("site").bare])
    return node


async def run_ours(settings: config.Settings, batch: list[Event], tmp: Path) -> RunResult:
    node = await fresh_node(settings, len(batch))
    loop = asyncio.get_running_loop()
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    done = asyncio.Event()
    service = settings.xmpp.pubsub_service

    async def handler(event: Event) -> None:
        received[event.id] = loop.time()
        if len(received) >= len(batch):
            done.set()

    store = SeenStore(tmp / f"seen-{node}.sqlite")
    async with connection(settings, "worker", "ceiling-in") as cin, \
            connection(settings, "site", "ceiling-out") as cout:
        consumer = Consumer(cin, PubSub(cin, service), node, store, handler)
        await consumer.start()
        publisher = Publisher(PubSub(cout, service))
        progress = Progress(f"ours  ({len(batch)} events)", len(batch))
        started = loop.time()
        await publish_window(publisher, node, batch, WINDOW, sent, progress)
        await _wait(done, 60)
        seconds = (max(received.values()) if received else loop.time()) - started
        progress.close()
        await consumer.close()
    store.close()
    return RunResult("ours", len(batch), len(received), seconds,
                     [received[i] - sent[i] for i in received if i in sent])


def bare_client(settings: config.Settings, account: str, resource: str) -> Any:
    acc = settings.account(account)
    client = slixmpp.ClientXMPP(f"{acc.bare}/{resource}", acc.password.reveal())
    client.enable_starttls = False
    client.enable_direct_tls = False
    client.enable_plaintext = True
    for plugin in ("xep_0030", "xep_0004", "xep_0060"):
        client.register_plugin(plugin)
    client.plugin["feature_mechanisms"].unencrypted_plain = True
    return client


async def bare_connect(client: Any, settings: config.Settings) -> None:
    ready = asyncio.Event()

    def started(_: Any) -> None:
        client.send_presence()
        ready.set()

    client.add_event_handler("session_start", started)
    client.connect(host=settings.xmpp.host, port=settings.xmpp.port)
    await asyncio.wait_for(ready.wait(), 30)


async def run_bare(settings: config.Settings, batch: list[Event]) -> RunResult:
    node = await fresh_node(settings, len(batch))
    loop = asyncio.get_running_loop()
    service = settings.xmpp.pubsub_service
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    done = asyncio.Event()
    sub = bare_client(settings, "worker", "bare-in")
    pub = bare_client(settings, "site", "bare-out")

    def on_publish(message: Any) -> None:
        items = message["pubsub_event"]["items"]
        if items["node"] != node:
            return
        item = items["item"]  # never iterate the items here (see notes/xmpp-servers.md)
        payload = item["payload"]
        json.loads(payload.text if payload is not None else "null")
        received[item["id"]] = loop.time()
        if len(received) >= len(batch):
            done.set()

    sub.add_event_handler("pubsub_publish", on_publish)
    await bare_connect(sub, settings)
    await bare_connect(pub, settings)
    try:
        await sub.plugin["xep_0060"].subscribe(service, node)
        progress = Progress(f"bare  ({len(batch)} events)", len(batch))
        it = iter(batch)
        count = 0

        async def lane() -> None:
            nonlocal count
            for event in it:
                payload = ET.Element(f"{{{JSON_NS}}}json")
                payload.text = event.to_json()
                sent[event.id] = loop.time()
                await pub.plugin["xep_0060"].publish(service, node, id=event.id,
                                                     payload=payload, timeout=60)
                count += 1
                progress.update(count)

        started = loop.time()
        await asyncio.gather(*(lane() for _ in range(WINDOW)))
        await _wait(done, 60)
        seconds = (max(received.values()) if received else loop.time()) - started
        progress.close()
    finally:
        for client in (sub, pub):
            await asyncio.wait_for(client.disconnect(wait=2.0), 5.0)
    return RunResult("bare", len(batch), len(received), seconds,
                     [received[i] - sent[i] for i in received if i in sent])


async def _wait(done: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        say(f"  (timed out after {timeout:.0f} s waiting for notifications)")


async def measure(settings: config.Settings, tmp: Path, n: int, rounds: int
                  ) -> list[RunResult]:
    results = []
    await run_ours(settings, events(min(200, n)), tmp)  # warm-up, discarded
    for _ in range(rounds):
        results.append(await run_ours(settings, events(n), tmp))
        results.append(await run_bare(settings, events(n)))
    return results


def summarize(results: list[RunResult], n: int, rounds: int) -> Section:
    section = Section(NAME)
    by = {v: [r for r in results if r.variant == v] for v in ("ours", "bare")}
    rates = {v: median([r.rate for r in rs]) for v, rs in by.items()}
    for variant, label in (("bare", "bare slixmpp"), ("ours", "ours")):
        lat = [x for r in by[variant] for x in r.latencies]
        lost = sum(r.sent - r.received for r in by[variant])
        section.add(f"{label}: publish->notify", rates[variant], "events/s",
                    note=f"{lost} lost" if lost else "")
        section.add(f"{label}: latency p50", percentile(lat, 0.5) * 1e3, "ms")
        section.add(f"{label}: latency p99", percentile(lat, 0.99) * 1e3, "ms")
    ratio = rates["ours"] / rates["bare"]
    section.add("ours / bare throughput", ratio, "x", goal=f">= {GOAL}", ok=ratio >= GOAL)
    per_run = ", ".join(f"{r.variant} {r.rate:.0f}" for r in results)
    section.notes.append(
        f"{n} events per run, window {WINDOW}, {rounds} alternating round(s), fresh node "
        f"per run; per run (events/s): {per_run}. The raw PubSub ceiling is bare's figure.")
    return section


def run(opts: Options) -> Section:
    n, rounds = (500, 1) if opts.quick else (1500, 3)
    with BenchServer(prefix="bench-ceiling-") as bs:
        from backchannel.localserver import config_toml

        _, settings = bs.write_config("backchannel.toml", config_toml(
            bs.state, var_dir=str(bs.dir / "var"), gateway_port=0))
        results = asyncio.run(measure(settings, bs.dir, n, rounds))
    section = summarize(results, n, rounds)
    bare = [r.rate for r in results if r.variant == "bare"]
    opts.shared["ceiling"] = median(bare)
    return section


def main() -> int:
    from benchmarks.common import print_table

    section = run(Options(quick="--quick" in sys.argv))
    print_table([section])
    return 0


if __name__ == "__main__":
    sys.exit(main())
