"""CLI commands beyond the backbone: demo, simulate, bench, and operator commands.

Kept apart from :mod:`backchannel.cli` so the parser module stays small; each command
imports its machinery lazily, so ``backchannel --help`` is fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any


def add_extra_commands(sub: Any) -> None:
    p = sub.add_parser("demo", help="run everything on this machine with simulated sites")
    p.add_argument("--check", action="store_true",
                   help="run a fixed number of events end to end, then exit 0 or 1")
    p.add_argument("--events", type=int, default=50, help="events for --check (default 50)")
    p.add_argument("--dir", default="var/demo", help="demo folder (default: var/demo)")
    p.add_argument("--rate", type=float, default=2.0, help="events per second (default 2)")
    p.add_argument("--port", type=int, default=8080, help="dashboard port (default 8080)")
    p.add_argument("--chaos", metavar="FILE",
                   help="use fake outside services misbehaving as this chaos profile says "
                        "(see simulator/chaos.example.toml)")
    from simulator.cli import add_parser as add_simulate

    add_simulate(sub)
    p = sub.add_parser("bench", help="run the benchmark suite and print one table")
    p.add_argument("--only", metavar="NAMES", help="comma-separated subset of: pubsub_ceiling,"
                   " pipeline, ingest, bot, backlog, memory")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--quick", action="store_true", help="a shorter run")


class _Extra:
    def reserved(self) -> set[str]:
        return {"demo", "simulate", "bench", "help", "--help", "-h"}

    def handler(self, name: str) -> Callable[[argparse.Namespace], int]:
        if name == "demo":
            from backchannel.demo import cmd_demo

            handler: Callable[[argparse.Namespace], int] = cmd_demo
            return handler
        if name == "simulate":
            from simulator.cli import cmd_simulate

            handler = cmd_simulate
            return handler
        if name == "bench":
            from benchmarks.run import main as cmd_bench

            handler = cmd_bench
            return handler
        raise KeyError(name)


OPERATOR_FALLBACK = _Extra()


def run_operator_command(argv: Sequence[str]) -> int:
    """``backchannel <operator command>`` (runs against a running bot over XMPP)."""
    try:
        from backchannel.cli_operator import run  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print(f"backchannel: unknown command {argv[0]!r} (see backchannel --help)",
              file=sys.stderr)
        return 2
    result: int = run(list(argv))
    return result
