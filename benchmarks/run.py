"""The aggregate runner behind ``backchannel bench``: every benchmark, one table.

Order matters: the raw PubSub ceiling runs first, because the pipeline benchmark divides
by it (same run, same machine). Each benchmark starts its own managed Prosody in a temp
folder, so none inherits another's node sizes. Progress goes to stderr; the table (or
JSON with ``--json``) to stdout. A benchmark that fails is reported as such and the
others still run.

    .venv/bin/python -m benchmarks.run [--only NAMES] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.common import Options, Section, machine, print_table, say

log = logging.getLogger(__name__)

ORDER = ("pubsub_ceiling", "pipeline", "ingest", "bot", "backlog", "memory")


def run_module(name: str) -> Callable[[Options], Section]:
    def runner(opts: Options) -> Section:
        module = importlib.import_module(f"benchmarks.{name}")
        section: Section = module.run(opts)
        return section
    return runner


def run_ingest(opts: Options) -> Section:
    """benchmarks/bench_ingest.py as it is: gateway in a child, open-loop load."""
    import asyncio
    import tempfile

    from backchannel import config
    from backchannel.localserver import config_toml, managed_server
    from benchmarks import bench_ingest

    args = argparse.Namespace(rate=200.0, duration=6.0 if opts.quick else 16.0, warmup=2.0,
                              slice=2.0, rounds=1, server="prosody")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        server = managed_server("prosody", Path(tmp) / "server")
        server.start()
        try:
            state = server.load_state()
            assert state is not None
            text = config_toml(state, var_dir=tmp, gateway_port=0, extra=bench_ingest.SITE_TOML)
            path = Path(tmp) / "backchannel.toml"
            path.write_text(text)
            settings = config.loads(text)
            if not settings.sites:
                settings = replace(settings, sites=(bench_ingest.SITE,))
            with contextlib.redirect_stdout(sys.stderr):
                bare, ingest = asyncio.run(bench_ingest.measure(settings, path, args))
        finally:
            server.stop()
    section = Section("ingest")
    for sample in (bare, ingest):
        section.add(f"{sample.name}: p50", sample.pct(0.5) * 1e3, "ms")
        section.add(f"{sample.name}: p99", sample.pct(0.99) * 1e3, "ms",
                    note=f"{sample.errors} errors" if sample.errors else "")
    ratio = ingest.pct(0.99) / bare.pct(0.99)
    section.add("p99 ingest / p99 bare", ratio, "x", goal=f"<= {bench_ingest.GOAL}",
                ok=ratio <= bench_ingest.GOAL)
    section.notes.append(f"open loop at {args.rate:g} requests/s for {args.duration:g} s per "
                         "phase, no worker running (benchmarks/bench_ingest.py).")
    return section


def run_bot(opts: Options) -> Section:
    """benchmarks/bench_bot.py when present (written separately); else 'not available'.

    It prints its figures, so they are read back from its output.
    """
    section = Section("bot")
    try:
        module = importlib.import_module("benchmarks.bench_bot")
    except ImportError:
        module = None
    entry = getattr(module, "bench", None) if module is not None else None
    if entry is None:
        section.add("round trip", None, "ms", note="not available")
        section.notes.append("benchmarks/bench_bot.py is not there (or has no bench()); the "
                             "bot round trip was not measured.")
        return section
    import asyncio
    import io
    import re
    import tempfile

    requests = 60 if opts.quick else 200
    out = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="bench-bot-") as tmp, \
            contextlib.redirect_stdout(out):
        asyncio.run(entry(requests, 50, Path(tmp)))
    text = out.getvalue()
    for label, pattern in (("bare slixmpp echo bot", r"bare slixmpp echo bot"),
                           ("bot `status`", r"backchannel `status`")):
        m = re.search(pattern + r"\s+([\d.]+)\s+([\d.]+)", text)
        if m:
            section.add(f"{label}: round trip p50", float(m.group(1)), "ms")
            section.add(f"{label}: round trip p99", float(m.group(2)), "ms")
    m = re.search(r"p50 ratio bot/echo: ([\d.]+) \(goal <= ([\d.]+)\)", text)
    if m:
        ratio, goal = float(m.group(1)), float(m.group(2))
        section.add("p50 bot / echo", ratio, "x", goal=f"<= {goal:g}", ok=ratio <= goal)
    section.notes.append(f"{requests} sequential round trips each, alternating blocks "
                         "(benchmarks/bench_bot.py).")
    return section


RUNNERS: dict[str, Callable[[Options], Section]] = {
    "pubsub_ceiling": run_module("pubsub_ceiling"),
    "pipeline": run_module("pipeline"),
    "ingest": run_ingest,
    "bot": run_bot,
    "backlog": run_module("backlog"),
    "memory": run_module("memory"),
}


def selected(only: str | None) -> list[str]:
    if not only:
        return list(ORDER)
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in RUNNERS]
    if unknown:
        raise SystemExit(f"backchannel bench: unknown benchmark(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(ORDER)}")
    return [n for n in ORDER if n in wanted]


def main(args: argparse.Namespace) -> int:
    """Run the benchmarks named by ``args.only`` (all by default); 0 if all ran."""
    logging.getLogger("slixmpp").setLevel(logging.ERROR)
    opts = Options(quick=bool(getattr(args, "quick", False)))
    names = selected(getattr(args, "only", None))
    load_before = os.getloadavg()
    started = time.monotonic()
    sections: list[Section] = []
    failed: list[str] = []
    for name in names:
        say(f"== {name}")
        t0 = time.monotonic()
        try:
            section = RUNNERS[name](opts)
        except Exception as exc:
            log.exception("benchmark %s failed", name)
            failed.append(name)
            section = Section(name)
            section.add("failed", None, note=f"{type(exc).__name__}: {str(exc)[:120]}")
        section.seconds = time.monotonic() - t0
        say(f"== {name} took {section.seconds:.0f} s")
        sections.append(section)
    total = time.monotonic() - started
    meta: dict[str, Any] = {
        "machine": machine(), "quick": opts.quick, "seconds": round(total, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    if getattr(args, "json", False):
        doc = {"meta": meta, "benchmarks": [
            {"name": s.name, "seconds": round(s.seconds, 1), "notes": s.notes,
             "rows": [r.as_dict() for r in s.rows]} for s in sections]}
        print(json.dumps(doc, indent=2, default=lambda v: None))
    else:
        print_table(sections)
        print(f"\n{meta['machine']}; {total:.0f} s in all"
              f"{' (--quick)' if opts.quick else ''}; load average before "
              f"{meta['loadavg_before'][0]:.2f}, after {meta['loadavg_after'][0]:.2f}")
    return 1 if failed else 0


def cli() -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="NAMES",
                        help=f"comma-separated subset of: {', '.join(ORDER)}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quick", action="store_true", help="a shorter run")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    return main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(cli())
