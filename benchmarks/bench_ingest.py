"""Ingest latency against bare publish latency, measured in the same run.

The claim under test: the front end never waits for the back end. A site's POST to the
gateway costs about what a raw XMPP publish costs, whatever the workers and the outside
services are doing; here nothing consumes the events node at all (no worker runs, so
every outside service is effectively down) and the POST still only waits for the
server to store the event.

What runs:
- a managed Prosody in a temporary folder (the same server the tests and the demo use),
  nodes bootstrapped;
- the gateway in a child process (its own event loop and XMPP session, as deployed);
- this process as the load generator, open loop: requests start on a fixed schedule
  (``--rate`` per second) whether or not earlier ones have finished, and latency is
  counted from the scheduled start, so a stall cannot hide itself (no coordinated
  omission).

After a discarded warm-up and a purge of the events node, the two kinds of request
alternate in short slices (``--slice`` s each, ``--duration`` s of each in total): bare
publish (a PubSub publish of the same event from this process, account ``site``) and
ingest (a signed HTTP POST). Interleaving matters: Prosody's cost per publish grows with
the node's size and nothing consumes it here, so a phase run second would be measured
against a bigger node. Prints a table and ``p99_ingest / p99_bare`` (goal <= 1.5).

    .venv/bin/python benchmarks/bench_ingest.py [--rate 200] [--duration 20] [--slice 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp

from backchannel import config
from backchannel.config import Secret, Settings, Site
from backchannel.localserver import config_toml, managed_server
from backchannel.metrics import Metrics
from gateway.app import Gateway
from gateway.auth import signed_headers
from pubsub.client import PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import make_event
from pubsub.nodes import bootstrap
from pubsub.publisher import Publisher

log = logging.getLogger("bench_ingest")

SITE = Site(name="bench", source="https://bench.example.com", secret=Secret("bench-secret"))
SITE_TOML = f"""
[[sites]]
name = "{SITE.name}"
source = "{SITE.source}"
secret = "{SITE.secret.reveal()}"
"""
DATA = {"user_id": "42", "email": "amy@example.com", "name": "Amy",
        "address": "Toluca Lake, CA"}
GOAL = 1.5
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Sample:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    late_starts: int = 0  # requests the generator itself started > 5 ms after schedule

    def pct(self, q: float) -> float:
        data = sorted(self.latencies)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(q * len(data)))]


async def open_loop(rate: float, duration: float, one: Callable[[], Awaitable[None]],
                    sample: Sample) -> None:
    """Start ``one()`` every 1/rate s for ``duration`` s; latency from the schedule."""
    count = int(rate * duration)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks: set[asyncio.Task[None]] = set()

    async def timed(scheduled: float) -> None:
        if loop.time() - scheduled > 0.005:
            sample.late_starts += 1
        try:
            await one()
        except Exception as exc:  # counted, and the first few shown
            sample.errors += 1
            if sample.errors <= 3:
                log.warning("%s request failed: %s", sample.name, exc)
            return
        sample.latencies.append(loop.time() - scheduled)

    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(timed(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)


# --------------------------------------------------------------------------- child


async def serve(config_path: str) -> None:
    """Child process: run the gateway until stdin closes; print its port first."""
    settings = config.load(config_path)
    conn = XmppConnection(settings.xmpp, settings.account("gateway"), resource="bench")
    async with conn, Gateway(settings, conn, metrics=Metrics()) as gateway:
        print(gateway.port, flush=True)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        eof = asyncio.ensure_future(reader.read())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({eof, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (eof, stopped):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --------------------------------------------------------------------------- parent


async def measure(settings: Settings, config_path: Path, args: argparse.Namespace
                  ) -> list[Sample]:
    async with XmppConnection(settings.xmpp, settings.account("admin"), resource="boot") as c:
        reports = await bootstrap(PubSub(c, settings.xmpp.pubsub_service), settings)
    failed = [r.lines() for r in reports if r.action == "failed"]
    if failed:
        raise SystemExit(f"bootstrap failed: {failed}")

    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(config_path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        url = f"http://127.0.0.1:{int(line)}/v1/events"
        return await phases(settings, url, args)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 10)
        except TimeoutError:
            child.kill()
            await child.wait()


async def phases(settings: Settings, url: str, args: argparse.Namespace) -> list[Sample]:
    node = settings.nodes.events
    samples = {"bare": Sample("bare publish"), "ingest": Sample("HTTP ingest")}
    async with XmppConnection(settings.xmpp, settings.account("site"), resource="bench") as conn, \
            XmppConnection(settings.xmpp, settings.account("admin"), resource="purge") as admin, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        publisher = Publisher(PubSub(conn, settings.xmpp.pubsub_service))

        async def bare() -> None:
            await publisher.publish(node, make_event("user.registered", SITE.source, DATA))

        async def ingest() -> None:
            body = make_event("user.registered", SITE.source, DATA).to_json().encode()
            headers = signed_headers(SITE.name, SITE.secret.reveal(), body)
            headers["Content-Type"] = "application/json"
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 202:
                    raise RuntimeError(f"HTTP {response.status}")

        for one in (bare, ingest):
            await open_loop(args.rate, args.warmup, one, Sample("warm-up"))
        # Prosody's cost per publish grows with the node's size, and nothing consumes
        # here: start empty and interleave short slices so both see the same node.
        await PubSub(admin, settings.xmpp.pubsub_service).purge(node)
        slices = max(1, round(args.duration / args.slice))
        print(f"{slices} x ({args.slice:g} s bare publish + {args.slice:g} s HTTP ingest) "
              f"at {args.rate:g}/s ...", flush=True)
        for _ in range(slices):
            for key, one in (("bare", bare), ("ingest", ingest)):
                await open_loop(args.rate, args.slice, one, samples[key])
    return [samples["bare"], samples["ingest"]]


def report(samples: list[Sample], args: argparse.Namespace) -> float:
    print()
    print(f"{'':14} {'n':>6} {'errors':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'mean ms':>8}")
    for s in samples:
        mean = statistics.fmean(s.latencies) if s.latencies else float("nan")
        print(f"{s.name:14} {len(s.latencies):6d} {s.errors:6d} {s.pct(0.5) * 1e3:8.2f} "
              f"{s.pct(0.9) * 1e3:8.2f} {s.pct(0.99) * 1e3:8.2f} "
              f"{max(s.latencies, default=float('nan')) * 1e3:8.2f} {mean * 1e3:8.2f}")
    bare, ingest = samples
    ratio = ingest.pct(0.99) / bare.pct(0.99)
    verdict = "meets" if ratio <= GOAL else "MISSES"
    print(f"\np99_ingest / p99_bare = {ratio:.2f}  ({verdict} the goal <= {GOAL}; "
          f"{args.rate:g} requests/s, {args.duration:g} s of each in {args.slice:g} s slices, "
          "no worker running)")
    late = sum(s.late_starts for s in samples)
    if late:
        print(f"note: the load generator itself started {late} requests > 5 ms late")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--slice", type=float, default=2.0,
                        help="seconds per alternating bare/ingest slice")
    parser.add_argument("--server", default="prosody", choices=["prosody", "ejabberd"])
    parser.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        server = managed_server(args.server, Path(tmp) / "server")
        server.start()
        try:
            state = server.load_state()
            assert state is not None
            text = config_toml(state, var_dir=tmp, gateway_port=0, extra=SITE_TOML)
            config_path = Path(tmp) / "backchannel.toml"
            config_path.write_text(text)
            settings = config.loads(text)
            settings = replace(settings, sites=(SITE,)) if not settings.sites else settings
            samples = asyncio.run(measure(settings, config_path, args))
        finally:
            server.stop()
    report(samples, args)
    return 0 if all(s.errors == 0 for s in samples) else 1


if __name__ == "__main__":
    sys.exit(main())
