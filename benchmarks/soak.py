"""Soak: the demo workload for a long time, watching every process for memory and fd leaks.

Not part of CI. Two ways to run the workload (:mod:`benchmarks.soak_stacks`):

- default: ``backchannel demo`` itself. There the worker, the gateway, the bot, the demo
  site and the simulated sites share one Python process (``backchannel``), and the managed
  Prosody is its child (``prosody``). The demo site keeps every callback it applied and
  the simulator every id it sent, by design, so that process grows with the run whatever
  the components do.
- ``--split``: the demo's configuration with every component in its own process
  (``worker``, ``gateway``, ``bot``), the demo site (``demo site``) and the simulated sites
  (``simulated sites``) in two more. The verdict is about the components and Prosody; the
  two harness processes are shown, not judged.

Every ``--interval`` seconds each process's resident set size (``VmRSS`` in
``/proc/<pid>/status``) and open file descriptors (entries of ``/proc/<pid>/fd``) are
recorded, with the workload's counters (events in and done, from the gateway's
``/metrics`` or, split, from the worker's store), which prove the work kept flowing.

Pass criteria, per judged process, over the samples after the warm-up:

- memory: the median RSS of the last window is less than 10 % above the median of the
  first window after warm-up (a window is ``--window`` seconds);
- file descriptors: no growth, i.e. the lowest count in the last window is not above the
  highest count in the first window (connections come and go; a leak lifts the floor);
- the workload: events were finished in the last window.

Samples go to ``test-artifacts/<name>.csv``, the summary to ``test-artifacts/<name>.json``
and stdout. Exit status 0 when every criterion holds, 1 otherwise, 2 when the workload did
not come up.

    nice -n 10 .venv/bin/python -m benchmarks.soak --minutes 30 --rate 5 [--split]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.soak_stacks import Stack, StackError, make_stack

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
MAX_GROWTH_PCT = 10.0


@dataclass(frozen=True)
class Sample:
    """One process at one moment."""

    t: float  # seconds since the demo was up
    label: str
    pid: int
    rss_kib: int
    fds: int
    sockets: int = 0  # of the fds; the rest are files, pipes, eventfds...


@dataclass
class ProcessReport:
    label: str
    pids: list[int]
    samples: int
    rss_start_mib: float  # median of the first window after warm-up
    rss_end_mib: float  # median of the last window
    rss_peak_mib: float
    growth_pct: float
    fd_min: int
    fd_max: int
    fd_first_window_max: int
    fd_last_window_min: int
    memory_ok: bool
    fds_ok: bool
    judged: bool = True  # False for the harness (demo site, simulated sites) in --split


@dataclass
class SoakReport:
    minutes: float
    rate: float
    mode: str
    warmup_s: float
    window_s: float
    interval_s: float
    started: str
    processes: list[ProcessReport] = field(default_factory=list)
    counters_start: dict[str, float] = field(default_factory=dict)
    counters_end: dict[str, float] = field(default_factory=dict)
    events_done_last_window: float = 0.0
    workload_ok: bool = False
    passed: bool = False
    note: str = ""


# ------------------------------------------------------------------------------- /proc


def _ppid(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return int(text.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (by parent pid)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def label_of(pid: int, root: int, root_label: str = "backchannel") -> str:
    if pid == root:
        return root_label
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return f"pid{pid}"
    words = b" ".join(argv).decode(errors="replace")
    for name in ("prosody", "ejabberd"):
        if name in words:
            return name
    return comm or f"pid{pid}"


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def fd_count(pid: int) -> tuple[int, int] | None:
    """Open descriptors of ``pid``, and how many of them are sockets."""
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    sockets = 0
    for name in names:
        with contextlib.suppress(OSError):
            sockets += os.readlink(f"{folder}/{name}").startswith("socket:")
    return len(names), sockets


def sample_tree(root: int, t: float, label: str = "backchannel") -> list[Sample]:
    out = []
    for pid in descendants(root):
        rss, fds = rss_kib(pid), fd_count(pid)
        if rss is None or fds is None:  # gone meanwhile, or a kernel thread without memory
            continue
        out.append(Sample(t, label_of(pid, root, label), pid, rss, fds[0], fds[1]))
    return out


# ------------------------------------------------------------------------------- analysis


def analyse(samples: Sequence[Sample], counters: Sequence[tuple[float, dict[str, float]]],
            *, warmup: float, window: float, judged: Sequence[str] | None = None
            ) -> tuple[list[ProcessReport], float, bool]:
    """Per-process reports, events done in the last window, and whether work flowed."""
    after = [s for s in samples if s.t >= warmup]
    if not after:
        return [], 0.0, False
    end = max(s.t for s in after)
    reports = []
    for label in sorted({s.label for s in after}):
        mine = [s for s in after if s.label == label]
        # Several processes with one label (a short-lived helper): sum per moment.
        per_t: dict[float, tuple[int, int]] = {}
        for s in mine:
            rss, fds = per_t.get(s.t, (0, 0))
            per_t[s.t] = (rss + s.rss_kib, fds + s.fds)
        times = sorted(per_t)
        first = [per_t[t] for t in times if t <= warmup + window] or [per_t[times[0]]]
        last = [per_t[t] for t in times if t >= end - window] or [per_t[times[-1]]]
        start_mib = statistics.median(r for r, _ in first) / 1024
        end_mib = statistics.median(r for r, _ in last) / 1024
        growth = (end_mib - start_mib) / start_mib * 100 if start_mib else 0.0
        fd_first_max = max(f for _, f in first)
        fd_last_min = min(f for _, f in last)
        reports.append(ProcessReport(
            label=label, pids=sorted({s.pid for s in mine}), samples=len(times),
            rss_start_mib=round(start_mib, 1), rss_end_mib=round(end_mib, 1),
            rss_peak_mib=round(max(r for r, _ in per_t.values()) / 1024, 1),
            growth_pct=round(growth, 2),
            fd_min=min(f for _, f in per_t.values()), fd_max=max(f for _, f in per_t.values()),
            fd_first_window_max=fd_first_max, fd_last_window_min=fd_last_min,
            memory_ok=growth < MAX_GROWTH_PCT, fds_ok=fd_last_min <= fd_first_max,
            judged=judged is None or label in judged,
        ))
    done_last = 0.0
    late = [(t, c) for t, c in counters if t >= end - window]
    if len(late) >= 2:
        done_last = late[-1][1]["events_done"] - late[0][1]["events_done"]
    return reports, done_last, done_last > 0


# ------------------------------------------------------------------------------- running


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def write_csv(path: Path, samples: Iterable[Sample]) -> None:
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["t_s", "process", "pid", "rss_kib", "fds", "sockets"])
        for s in samples:
            writer.writerow([f"{s.t:.1f}", s.label, s.pid, s.rss_kib, s.fds, s.sockets])


def summary_lines(report: SoakReport) -> list[str]:
    lines = [f"soak ({report.mode}): {report.minutes:g} min at {report.rate:g} events/s "
             f"(warm-up {report.warmup_s:.0f} s, windows of {report.window_s:.0f} s)"]
    for p in report.processes:
        lines.append(
            f"  {p.label:<15} RSS {p.rss_start_mib:7.1f} -> {p.rss_end_mib:7.1f} MiB "
            f"({p.growth_pct:+.1f} %, peak {p.rss_peak_mib:.1f})  fds {p.fd_min}..{p.fd_max} "
            f"(first window max {p.fd_first_window_max}, last window min "
            f"{p.fd_last_window_min})  memory {'ok' if p.memory_ok else 'FAIL'}, "
            f"fds {'ok' if p.fds_ok else 'FAIL'}" + ("" if p.judged else " (harness, not judged)"))
    start, end = report.counters_start, report.counters_end
    if end:
        lines.append(
            "  workload: events in {:.0f}, done {:.0f}, ingested by HTTP {:.0f}, callbacks {:.0f}"
            " (since warm-up: {:.0f} done); queue depth at end {:.0f}".format(
                end["events_in"], end["events_done"], end["ingested"], end["callbacks"],
                end["events_done"] - start.get("events_done", 0.0), end["queue_depth"]))
    lines.append(f"  events done in the last window: {report.events_done_last_window:.0f} "
                 f"({'ok' if report.workload_ok else 'FAIL: the workload stalled'})")
    if report.note:
        lines.append(f"  note: {report.note}")
    lines.append(f"  result: {'PASS' if report.passed else 'FAIL'}")
    return lines


def sample_all(stack: Stack, t: float) -> list[Sample]:
    out: list[Sample] = []
    for label, pid in stack.roots().items():
        out.extend(sample_tree(pid, t, label))
    return out


def stop_leftovers(samples: Sequence[Sample]) -> None:
    """SIGTERM to a managed server still running after its parent was stopped (a killed
    demo leaves it: it runs in a session of its own), if that pid runs the same program."""
    last = max((s.t for s in samples), default=None)
    for s in samples:
        if s.t == last and s.label in ("prosody", "ejabberd") and \
                Path(f"/proc/{s.pid}").exists() and label_of(s.pid, -1) == s.label:
            with contextlib.suppress(ProcessLookupError):
                os.kill(s.pid, signal.SIGTERM)


def run(args: argparse.Namespace) -> int:
    duration = args.minutes * 60.0
    warmup = args.warmup * 60.0 if args.warmup is not None else min(300.0, duration / 5)
    window = args.window if args.window is not None else max(60.0, 3 * args.interval)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(args.dir).absolute()
    mode = "split" if args.split else "demo"
    report = SoakReport(minutes=args.minutes, rate=args.rate, mode=mode, warmup_s=warmup,
                        window_s=window, interval_s=args.interval,
                        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    stack = make_stack(args.split, folder, args.rate, args.port, args.startup_timeout)
    say(f"soak: starting the workload ({mode}) in {folder} ...")
    samples: list[Sample] = []
    counters: list[tuple[float, dict[str, float]]] = []
    try:
        try:
            stack.start()
        except StackError as exc:
            say(f"soak: the workload did not come up: {exc}")
            return 2
        say(f"soak: up ({', '.join(stack.roots())}); sampling every {args.interval:g} s "
            f"for {args.minutes:g} min")
        t0 = time.monotonic()
        next_at = t0
        last_note = t0
        while True:
            t = time.monotonic() - t0
            if t > duration:
                break
            gone = stack.alive()
            if gone is not None:
                report.note = f"{gone} exited early, at {t:.0f} s"
                break
            samples.extend(sample_all(stack, t))
            found = stack.counters()
            if found is not None:
                counters.append((t, found))
            if time.monotonic() - last_note >= 300:
                last_note = time.monotonic()
                rss = sum(s.rss_kib for s in samples if s.t == t) / 1024
                done = found["events_done"] if found else float("nan")
                say(f"soak: {t / 60:.0f} min, RSS {rss:.0f} MiB in all, {done:.0f} events done")
            next_at += args.interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        stack.stop()
        stop_leftovers(samples)
    reports, done_last, flowing = analyse(samples, counters, warmup=warmup, window=window,
                                          judged=stack.judged)
    report.processes = reports
    late = [c for t, c in counters if t >= warmup]
    report.counters_start = late[0] if late else {}
    report.counters_end = counters[-1][1] if counters else {}
    report.events_done_last_window = done_last
    report.workload_ok = flowing
    report.passed = (bool(reports) and flowing and not report.note
                     and all(p.memory_ok and p.fds_ok for p in reports if p.judged))
    write_csv(out_dir / f"{args.name}.csv", samples)
    (out_dir / f"{args.name}.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    for line in summary_lines(report):
        print(line, flush=True)
    print(f"  samples: {out_dir / (args.name + '.csv')}, summary: "
          f"{out_dir / (args.name + '.json')}", flush=True)
    return 0 if report.passed else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Run the demo workload for a long time and watch every process's memory "
                    "(VmRSS) and open file descriptors. Pass: RSS growth after warm-up under "
                    f"{MAX_GROWTH_PCT:g} %, no fd growth, events still completing at the end.")
    p.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    p.add_argument("--rate", type=float, default=5.0,
                   help="events per second from the simulated sites (default 5)")
    p.add_argument("--interval", type=float, default=10.0,
                   help="seconds between samples (default 10)")
    p.add_argument("--warmup", type=float, default=None,
                   help="minutes ignored at the start (default: a fifth of the run, at most 5)")
    p.add_argument("--window", type=float, default=None,
                   help="seconds compared at each end (default: 60, or 3 samples)")
    p.add_argument("--split", action="store_true",
                   help="one process per component, the demo site and the simulated sites "
                        "in two more (default: `backchannel demo`, everything in one process)")
    p.add_argument("--dir", default="var/soak", help="work folder (default: var/soak)")
    p.add_argument("--port", type=int, default=0, help="dashboard port (default: a free one)")
    p.add_argument("--out", default=str(ARTIFACTS),
                   help="where soak.csv and soak.json go (default: test-artifacts/)")
    p.add_argument("--name", default="soak", help="artifact file name stem (default: soak)")
    p.add_argument("--startup-timeout", type=float, default=180.0,
                   help="seconds to wait for each process to come up (default 180)")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.interval <= 0:
        p.error("--minutes, --rate and --interval must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

