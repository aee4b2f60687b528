"""Backlog growth: worker throughput and peak memory with 1k, 10k, 100k events pending.

The claim under test: no step of the pipeline is linear in the backlog, so with 100k
events pending the worker stays under 200 MB RSS and still processes at >= 0.8x its rate
with 1k pending.

How the backlog is made (``--via``):

- ``store`` (the default, and what ``backchannel bench`` uses): the events are inserted
  straight into the worker's SQLite store (``Store.accept``, exactly what the consumer
  does on receipt) before the worker starts: the state after a long outage of the outside
  services, or after the consumer took in a burst faster than the services could follow;
- ``node``: the events are published to the events node (created with max_items 100000;
  the managed Prosody allows ``pubsub_max_items = 100000``) with no worker running, and
  the worker takes them in through its start-up catch-up. Slower to prepare (the server
  stores ~250-450 items/s), so not in the default suite.

Then the worker starts in its own process (``backchannel run --components worker``,
demo configuration: offline geocoder, local CRM and list adapters, no callbacks) and we
measure results/s over the first N results on the results node and the worker's peak RSS
(``VmHWM``) at that point, plus the time from start to the first result.

    .venv/bin/python -m benchmarks.backlog [--sizes 1000,10000,100000] [--via store|node]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

from backchannel import config
from benchmarks.common import (
    BenchServer,
    ItemCounter,
    Options,
    Progress,
    Section,
    bootstrap_nodes,
    connection,
    publish_window,
    run_component,
    say,
)
from pubsub.client import PubSub
from pubsub.envelope import make_event
from pubsub.publisher import Publisher
from simulator.people import fake_event_data
from simulator.stack import SITE_SOURCE, StackOptions, stack_toml
from workers.analyzer import Analyzer
from workers.store import Store

NAME = "backlog"
RSS_GOAL_MIB = 200.0
RATE_GOAL = 0.8
ROUTE = "user.registered"


def preload_store(path: Path, settings: config.Settings, size: int) -> float:
    """Insert ``size`` pending events the way the consumer does; returns seconds taken."""
    tasks = Analyzer(settings.worker.routes).tasks_for(ROUTE) or ()
    pairs = [(t, t) for t in tasks]
    rng = random.Random(size)  # noqa: S311 - test data
    started = time.perf_counter()
    store = Store(path)
    progress = Progress(f"preload {size} into the store", size)
    try:
        for i in range(size):
            event = make_event(ROUTE, SITE_SOURCE, fake_event_data(ROUTE, rng))
            store.accept(event.id, event.type, event.source, event.to_dict(), pairs)
            if i % 500 == 0:
                progress.update(i)
        progress.update(size)
    finally:
        store.close()
        progress.close()
    return time.perf_counter() - started


async def preload_node(settings: config.Settings, size: int) -> float:
    rng = random.Random(size)  # noqa: S311 - test data
    events = [make_event(ROUTE, SITE_SOURCE, fake_event_data(ROUTE, rng)) for _ in range(size)]
    started = time.perf_counter()
    async with connection(settings, "site", "preload") as conn:
        progress = Progress(f"publish {size} to the events node", size)
        await publish_window(Publisher(PubSub(conn, settings.xmpp.pubsub_service)),
                             settings.nodes.events, events, 32, progress=progress)
        progress.close()
    return time.perf_counter() - started


async def one_size(bs: BenchServer, size: int, first_n: int, via: str
                   ) -> dict[str, float]:
    var = bs.dir / f"var-backlog-{size}"
    text = stack_toml(bs.state, StackOptions(var_dir=str(var), node_prefix=f"bl{size}"))
    text = text.replace("[nodes]\n", "[nodes]\nmax_items = 100000\n", 1)
    path, settings = bs.write_config(f"backlog-{size}.toml", text)
    await bootstrap_nodes(settings)
    store_path = Path(settings.worker.store)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    if via == "store":
        prepare = await asyncio.to_thread(preload_store, store_path, settings, size)
    else:
        prepare = await preload_node(settings, size)
    async with connection(settings, "operator", "counter") as watch:
        counter = ItemCounter(watch, settings.xmpp.pubsub_service, settings.nodes.results)
        await counter.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        worker = await run_component(path, "worker")
        try:
            progress = Progress(f"worker, {size} pending: first {first_n}", first_n)
            done = await counter.wait_for(first_n, timeout=max(180.0, first_n / 2),
                                          progress=progress)
            progress.close()
            rss = worker.peak_rss_mib()
        finally:
            await worker.stop()
    if not done:
        say(f"  backlog {size}: only {len(counter.arrived)} results before the deadline")
    arrivals = sorted(counter.arrived.values())
    task_rate = float("nan")
    if len(arrivals) >= 2:
        # Task attempts the worker finished in the same window, per event's worth of tasks:
        # the processing rate whatever order the independent lanes took the work in.
        wall = time.time() - loop.time()
        store = Store(store_path)
        try:
            (count,) = store.q("SELECT COUNT(*) FROM attempts WHERE started_at BETWEEN ? AND ?",
                               (arrivals[0] + wall, arrivals[-1] + wall))[0]
        finally:
            store.close()
        tasks = len(Analyzer(settings.worker.routes).tasks_for(ROUTE) or ()) or 1
        task_rate = count / tasks / max(arrivals[-1] - arrivals[0], 1e-9)
    return {
        "task_rate": task_rate,
        "prepare_s": prepare,
        "first_result_s": (arrivals[0] - started) if arrivals else float("nan"),
        "rate": counter.rate(first_n),
        "rss": rss,
        "seen": float(len(arrivals)),
    }


async def measure(sizes: tuple[int, ...], first_n: int, via: str) -> dict[int, dict[str, float]]:
    out = {}
    with BenchServer(prefix="bench-backlog-") as bs:
        for size in sizes:
            say(f"backlog: {size} pending events (via {via})")
            out[size] = await one_size(bs, size, min(first_n, size), via)
    return out


def run(opts: Options, via: str = "store") -> Section:
    sizes = opts.sizes or ((1000, 10_000) if opts.quick else (1000, 10_000, 100_000))
    first_n = 500 if opts.quick else 1000
    results = asyncio.run(measure(sizes, first_n, via))
    section = Section(NAME)
    base = results[sizes[0]]["rate"]
    for size in sizes:
        r = results[size]
        section.add(f"{size:,} pending: results over first {min(first_n, size)}", r["rate"],
                    "events/s",
                    goal="" if size == sizes[0] else f">= {RATE_GOAL} x {sizes[0]:,} rate",
                    ok=None if size == sizes[0] else r["rate"] >= RATE_GOAL * base)
        section.add(f"{size:,} pending: processing rate", r["task_rate"], "events/s",
                    note="task attempts / 3, see notes")
        section.add(f"{size:,} pending: worker peak RSS", r["rss"], "MiB",
                    goal=f"< {RSS_GOAL_MIB:.0f}" if size >= 100_000 else "",
                    ok=r["rss"] < RSS_GOAL_MIB if size >= 100_000 else None)
        section.add(f"{size:,} pending: start to first result", r["first_result_s"], "s")
        section.add(f"{size:,} pending: preparing the backlog", r["prepare_s"], "s",
                    note=f"via {via}")
    if max(sizes) < 100_000:
        section.notes.append(f"sizes {', '.join(map(str, sizes))} only (quick or --sizes); "
                             "the 100k goal is not checked")
    how = ("straight into the worker store" if via == "store"
           else "on the events node, taken in by the worker's catch-up")
    section.notes.append(
        f"backlog inserted {how}; worker in its own process, demo configuration (offline "
        "geocoder, local CRM/list adapters, no callbacks); rate = results/s on the results "
        "node between the first and the N-th result; processing rate = task attempts the "
        "worker recorded in that window / 3 tasks per event. The two differ because lanes "
        "are independent: with a deep backlog the fast lanes (local CRM, list) run ahead "
        "on events whose geocode is still queued, so results trail the work done; with "
        "1k the fast lanes finish much of their work before the first result, which the "
        "window misses. The goal is checked on the results rate (the conservative one).")
    return section


def main() -> int:
    from benchmarks.common import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="")
    parser.add_argument("--via", choices=["store", "node"], default="store")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(",") if s) or None
    print_table([run(Options(quick=args.quick, sizes=sizes), via=args.via)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
