"""Child process: the simulator's fake outside services and demo site, for benchmarks.

Why a separate process: on a small machine the fakes would otherwise share the event
loop (and the core) of whatever they serve, and the benchmark would measure them.

    python -m benchmarks.fakes [--latency SECONDS]

Prints ``ready <services url> <site url>`` once listening; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from simulator.chaos import Chaos
from simulator.demosite import DemoSite
from simulator.services import FakeServices
from simulator.stack import WEBHOOK_SECRET


async def serve(latency: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with FakeServices(seed=7) as services, \
            DemoSite(secret=WEBHOOK_SECRET, seed=7) as site:
        for name in ("geocoder", "crm", "lists"):
            services.service(name).control.set(Chaos(latency=latency))
        print(f"ready {services.url} {site.url}", flush=True)
        await stop.wait()
        print(f"applied {len(site.applied)} duplicates {site.duplicates}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0)
    asyncio.run(serve(parser.parse_args().latency))


if __name__ == "__main__":
    main()
