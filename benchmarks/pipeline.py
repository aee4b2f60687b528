"""Pipeline throughput: events/s through the whole worker, against the raw PubSub ceiling.

Every variant runs on the same managed Prosody, with its own fresh nodes:

- (a) the worker (``backchannel run --components worker``, its own process) with instant
  fake services (the simulator's Nominatim-compatible geocoder, CRM and mailing list,
  in another process) and XML-RPC callbacks to the simulator's demo site;
- (b) the same with 200 ms latency on every outside service (geocoder, CRM, list; the
  demo site's callbacks stay instant);
- (c) the same workload and the same fakes through the original thread-pool design
  (:mod:`benchmarks.threadpool`: 16 threads, blocking calls in sequence, then publishing).

The load comes from this process: ``user.registered`` events (simulator people) published
to the events node with 32 in flight while the worker runs; throughput is events from the
first publish to the last result seen on the results node (our own subscription).

Per ``user.registered`` event the pipeline makes 3 publishes (result, signups feed,
activity feed), on top of the site's one publish of the event itself. Goal (a): >= 90% of
ceiling / 3, where the ceiling is bare slixmpp's publish->notify rate from
:mod:`benchmarks.pubsub_ceiling` in the same run (measured here when run alone).
"""

from __future__ import annotations

import asyncio
import random
import sys
from dataclasses import dataclass

from backchannel import config
from benchmarks import pubsub_ceiling
from benchmarks.common import (
    BenchServer,
    Child,
    ItemCounter,
    Options,
    Progress,
    Section,
    bootstrap_nodes,
    connection,
    cpu_seconds,
    publish_window,
    run_component,
    say,
    spawn,
)
from pubsub.client import PubSub
from pubsub.envelope import Event, make_event
from pubsub.publisher import Publisher
from simulator.people import fake_event_data
from simulator.stack import SITE_SOURCE, StackOptions, stack_toml

NAME = "pipeline"
PUBLISHES_PER_EVENT = 3
GOAL_FRACTION = 0.9
LATENCY = 0.2
CONCURRENCY = 64  # per service; 16 (the stack default) would cap (b) at 16 / 0.2 s = 80/s
THREADS = 16
WINDOW = 32


@dataclass
class Variant:
    key: str
    label: str
    latency: float
    design: str  # "worker" or "threadpool"


VARIANTS = (
    Variant("a", "(a) worker, instant services", 0.0, "worker"),
    Variant("b", f"(b) worker, {LATENCY * 1000:.0f} ms services", LATENCY, "worker"),
    Variant("c", f"(c) thread pool x{THREADS}, {LATENCY * 1000:.0f} ms services", LATENCY,
            "threadpool"),
    Variant("c0", f"(c) thread pool x{THREADS}, instant services", 0.0, "threadpool"),
)


def registrations(n: int, seed: int) -> list[Event]:
    rng = random.Random(seed)  # noqa: S311 - test data
    return [make_event("user.registered", SITE_SOURCE, fake_event_data("user.registered", rng))
            for _ in range(n)]


@dataclass
class Outcome:
    rate: float  # events/s
    rss: float  # peak RSS of the consumer process, MiB
    seen: int  # results seen
    server_cpu_ms: float  # XMPP server CPU per event during the run
    consumer_cpu_ms: float  # consumer process CPU per event (start-up included)


async def one_variant(bs: BenchServer, v: Variant, n: int) -> Outcome:
    """Run one variant; CPU figures say which process the throughput is bound by."""
    fakes = await spawn([sys.executable, "-m", "benchmarks.fakes", "--latency", str(v.latency)],
                        "fakes", ready="ready")
    _, services_url, site_url = fakes.first_line.split()
    var = bs.dir / f"var-{v.key}"
    text = stack_toml(bs.state, StackOptions(
        var_dir=str(var), services_url=services_url, site_url=site_url,
        callback_protocol="xmlrpc", node_prefix=f"pipe{v.key}", geocoder="nominatim"))
    text = text.replace("concurrency = 16", f"concurrency = {CONCURRENCY}")
    path, settings = bs.write_config(f"pipeline-{v.key}.toml", text)
    consumer: Child | None = None
    try:
        await bootstrap_nodes(settings)
        if v.design == "worker":
            consumer = await run_component(path, "worker")
        else:
            consumer = await spawn([sys.executable, "-m", "benchmarks.threadpool", str(path),
                                    services_url, site_url, "--threads", str(THREADS)],
                                   "threadpool", ready="ready")
        server_before = cpu_seconds(bs.state.pid or 0)
        rate, seen = await drive(settings, n, v.label)
        server_cpu = cpu_seconds(bs.state.pid or 0) - server_before
        rss = consumer.peak_rss_mib()
        consumer_cpu = consumer.cpu_seconds()
    finally:
        if consumer is not None:
            await consumer.stop()
        await fakes.stop()
    return Outcome(rate, rss, seen, 1000 * server_cpu / max(seen, 1),
                   1000 * consumer_cpu / max(seen, 1))


async def drive(settings: config.Settings, n: int, label: str) -> tuple[float, int]:
    events = registrations(n, seed=n)
    service = settings.xmpp.pubsub_service
    async with connection(settings, "operator", "counter") as watch, \
            connection(settings, "site", "load") as load:
        counter = ItemCounter(watch, service, settings.nodes.results)
        await counter.start()
        publisher = Publisher(PubSub(load, service))
        loop = asyncio.get_running_loop()
        started = loop.time()
        progress = Progress(f"{label[:4]} results", n)
        publishing = asyncio.create_task(publish_window(publisher, settings.nodes.events,
                                                        events, WINDOW))
        finished = await counter.wait_for(n, timeout=max(120.0, n / 5), progress=progress)
        progress.close()
        await publishing
        if not finished:
            say(f"  {label}: only {len(counter.arrived)}/{n} results before the deadline")
        last = max(counter.arrived.values(), default=started)
        return len(counter.arrived) / max(last - started, 1e-9), len(counter.arrived)


async def measure(bs: BenchServer, n: int, variants: tuple[Variant, ...]
                  ) -> dict[str, Outcome]:
    out = {}
    for v in variants:
        say(f"pipeline {v.label}: {n} events")
        out[v.key] = await one_variant(bs, v, n)
    return out


def run(opts: Options) -> Section:
    n = 400 if opts.quick else 1000
    variants = VARIANTS if not opts.quick else VARIANTS[:3]
    section = Section(NAME)
    ceiling = opts.shared.get("ceiling")
    if ceiling is None:
        say("pipeline: no ceiling from this run yet; measuring it (bare slixmpp)")
        ceiling_section = pubsub_ceiling.run(Options(quick=True, shared=opts.shared))
        ceiling = opts.shared["ceiling"]
        section.notes.append("ceiling measured by a quick pubsub_ceiling run: "
                             + "; ".join(f"{r.metric} {r.value:.0f}"
                                         for r in ceiling_section.rows[:1] if r.value))
    with BenchServer(prefix="bench-pipeline-") as bs:
        results = asyncio.run(measure(bs, n, variants))
    target = ceiling / PUBLISHES_PER_EVENT
    section.add("raw ceiling (bare publish->notify)", ceiling, "events/s")
    section.add("publishes per user.registered", PUBLISHES_PER_EVENT, "",
                note="result + signups + activity")
    section.add("ceiling / 3", target, "events/s")
    for v in variants:
        out = results[v.key]
        rate, rss, seen = out.rate, out.rss, out.seen
        lost = f"{n - seen} of {n} missing" if seen < n else ""
        if v.key == "a":
            section.add(f"{v.label}", rate, "events/s",
                        goal=f">= {GOAL_FRACTION * target:.0f} (90% of ceiling/3)",
                        ok=rate >= GOAL_FRACTION * target and seen == n, note=lost)
            section.add("(a) as share of ceiling/3", 100 * rate / target, "%")
            section.add("(a) XMPP server CPU per event", out.server_cpu_ms, "ms",
                        note="site's publish + the 3 pipeline publishes + notifications")
            section.add("(a) bound by the server's CPU alone", 1000 / out.server_cpu_ms,
                        "events/s", note="if the server had a core to itself")
            section.add("(a) worker CPU per event", out.consumer_cpu_ms, "ms",
                        note="start-up included")
        elif v.key == "b":
            bound = CONCURRENCY / LATENCY
            section.add(f"{v.label}", rate, "events/s",
                        goal=f">= 0.9 x (a), latency bound {bound:.0f}/s",
                        ok=rate >= 0.9 * results["a"].rate and seen == n, note=lost)
        else:
            section.add(f"{v.label}", rate, "events/s", note=lost)
        section.add(f"{v.label[:3]} consumer peak RSS" + (" (instant)" if v.key == "c0" else ""),
                    rss, "MiB")
    section.notes.append(
        f"{n} user.registered events per variant, published with {WINDOW} in flight while the "
        f"consumer runs; worker services concurrency {CONCURRENCY}; XML-RPC callbacks to the "
        "demo site included in every variant; fakes and consumer in their own processes.")
    return section


def main() -> int:
    from benchmarks.common import print_table

    section = run(Options(quick="--quick" in sys.argv))
    print_table([section])
    return 0


if __name__ == "__main__":
    sys.exit(main())


