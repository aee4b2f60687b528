"""What every benchmark shares: a managed server in a temp folder, child processes, timing.

Why one module: every figure in ``backchannel bench`` must come from the same kind of
setup (the managed Prosody the demo and the tests run, nodes bootstrapped the same way),
be printed the same way, and be measured against a baseline taken in the same run. A
benchmark module builds :class:`Row` objects; :mod:`benchmarks.run` prints them.

Memory figures come from ``/proc/<pid>/status`` (``VmHWM`` is the peak resident set
size of that process), so components are run as child processes
(``backchannel run --components X``) and their memory is their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from xml.etree import ElementTree as ET

from backchannel import config
from backchannel.errors import ServerError
from backchannel.localserver import ServerState, managed_server
from pubsub.client import NS_EVENT, PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import Event
from pubsub.nodes import bootstrap, bootstrap_node, desired_config
from pubsub.publisher import Publisher

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One figure of one benchmark."""

    bench: str
    metric: str
    value: float | None
    unit: str = ""
    goal: str = ""
    ok: bool | None = None  # None: no goal, or not measurable
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        value = None if self.value is None or math.isnan(self.value) else self.value
        return {"bench": self.bench, "metric": self.metric, "value": value,
                "unit": self.unit, "goal": self.goal, "ok": self.ok, "note": self.note}


@dataclass
class Section:
    """A benchmark's figures plus free-text notes (what was measured, what limits it)."""

    name: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, metric: str, value: float | None, unit: str = "", *, goal: str = "",
            ok: bool | None = None, note: str = "") -> Row:
        row = Row(self.name, metric, value, unit, goal, ok, note)
        self.rows.append(row)
        return row


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(sections: Sequence[Section], out: TextIO = sys.stdout) -> None:
    """One table for every section: benchmark, metric, value, unit, goal, verdict."""
    header = ("benchmark", "metric", "value", "unit", "goal", "")
    rows = [header]
    for s in sections:
        for r in s.rows:
            verdict = "" if r.ok is None else ("met" if r.ok else "NOT MET")
            rows.append((r.bench, r.metric + (f" ({r.note})" if r.note else ""),
                         fmt(r.value), r.unit, r.goal, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i == 2 else c.ljust(w) for i, (c, w) in
                 enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip(), file=out)
        if n == 0:
            print(line, file=out)
    for s in sections:
        for note in s.notes:
            print(f"* {s.name}: {note}", file=out)


# --------------------------------------------------------------------------- numbers


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def median(values: Sequence[float]) -> float:
    return percentile(values, 0.5)


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS/VmHWM/... of a process, in KiB (empty if it is gone)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key.startswith("Vm") and rest.strip().endswith("kB"):
                out[key] = int(rest.split()[0])
    return out


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time a process has used so far (from /proc; NaN if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int | str = "self") -> float:
    return proc_status(pid).get("VmHWM", 0) / 1024 or float("nan")


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = proc_meminfo_gib()
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Python "
            f"{sys.version.split()[0]}, {os.uname().sysname} {os.uname().release}")


def proc_meminfo_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


# --------------------------------------------------------------------------- progress


class Progress:
    """A progress bar on stderr (a line per quarter when stderr is not a terminal)."""

    def __init__(self, label: str, total: int, out: TextIO = sys.stderr) -> None:
        self.label = label
        self.total = max(total, 1)
        self.out = out
        self.count = 0
        self.tty = out.isatty()
        self._last_quarter = -1
        self._last_draw = 0.0
        self.started = time.monotonic()

    def update(self, count: int) -> None:
        self.count = count
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw < 0.1 and count < self.total:
                return
            self._last_draw = now
            done = int(30 * min(count, self.total) / self.total)
            print(f"\r  {self.label:<34} [{'#' * done}{'.' * (30 - done)}] "
                  f"{count}/{self.total}", end="", file=self.out, flush=True)
        else:
            quarter = 4 * min(count, self.total) // self.total
            if quarter > self._last_quarter:
                self._last_quarter = quarter
                print(f"  {self.label}: {count}/{self.total}", file=self.out, flush=True)

    def close(self) -> None:
        if self.tty:
            print(f"\r  {self.label:<34} {self.count}/{self.total} in "
                  f"{time.monotonic() - self.started:.1f} s{' ' * 30}", file=self.out,
                  flush=True)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- server


class BenchServer:
    """A managed Prosody in a temp folder, with helpers to write configs into it."""

    def __init__(self, kind: str = "prosody", prefix: str = "bench-") -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.dir = Path(self.tmp.name)
        self.server = managed_server(kind, self.dir / "server")
        self.state: ServerState

    def __enter__(self) -> BenchServer:
        try:
            self.server.start()
        except ServerError:
            # Seen on a loaded machine: prosodyctl's account creation raced Prosody's own
            # SQLite transaction at first start. One retry in a fresh folder.
            self.server.stop()
            self.server = managed_server(self.server.kind, self.dir / "server-retry")
            self.server.start()
        state = self.server.load_state()
        assert state is not None
        self.state = state
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.server.stop()
        finally:
            self.tmp.cleanup()

    @property
    def pid(self) -> int | None:
        return self.state.pid if self.state else None

    def write_config(self, name: str, text: str) -> tuple[Path, config.Settings]:
        path = self.dir / name
        path.write_text(text)
        return path, config.load(path)


async def bootstrap_nodes(settings: config.Settings) -> None:
    async with XmppConnection(settings.xmpp, settings.account("admin"), resource="boot") as c:
        reports = await bootstrap(PubSub(c, settings.xmpp.pubsub_service), settings)
    failed = [r.lines() for r in reports if r.action == "failed"]
    if failed:
        raise RuntimeError(f"node bootstrap failed: {failed}")


async def create_node(settings: config.Settings, node: str, *, max_items: int,
                      publishers: Iterable[str]) -> None:
    """A fresh open-access node with ``max_items``, publishers granted (benchmark nodes)."""
    wanted = desired_config(settings.nodes, node)
    wanted["pubsub#max_items"] = str(max_items)
    wanted["pubsub#access_model"] = "open"
    async with XmppConnection(settings.xmpp, settings.account("admin"), resource="boot") as c:
        ps = PubSub(c, settings.xmpp.pubsub_service)
        advertised = set(await ps.default_config()) or None
        report = await bootstrap_node(ps, node, wanted, advertised,
                                      {j: "publisher" for j in publishers})
    if report.action == "failed":
        raise RuntimeError(f"cannot create node {node}: {report.error}")


@contextlib.asynccontextmanager
async def connection(settings: config.Settings, account: str, resource: str = "bench"
                     ) -> AsyncIterator[XmppConnection]:
    conn = XmppConnection(settings.xmpp, settings.account(account), resource=resource)
    await conn.start()
    try:
        yield conn
    finally:
        await conn.close()


# --------------------------------------------------------------------------- load


async def publish_window(publisher: Publisher, node: str, events: Sequence[Event],
                         window: int, sent: dict[str, float] | None = None,
                         progress: Progress | None = None) -> None:
    """Publish with at most ``window`` publishes in flight; record start times in ``sent``."""
    it = iter(events)
    done = 0
    loop = asyncio.get_running_loop()

    async def lane() -> None:
        nonlocal done
        for event in it:
            if sent is not None:
                sent[event.id] = loop.time()
            await publisher.publish(node, event, timeout=60)
            done += 1
            if progress is not None:
                progress.update(done)

    await asyncio.gather(*(lane() for _ in range(window)))


class ItemCounter:
    """Counts unique items arriving on one node (its own subscription, raw XML handler)."""

    def __init__(self, conn: XmppConnection, service: str, node: str) -> None:
        self.conn = conn
        self.pubsub = PubSub(conn, service)
        self.node = node
        self.arrived: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    async def start(self) -> None:
        self.conn.on_message(
            f"{{jabber:client}}message/{{{NS_EVENT}}}event/{{{NS_EVENT}}}items",
            self._on_message, name=f"counter:{self.node}")
        await self.pubsub.subscribe(self.node, self.conn.bare_jid)

    def _on_message(self, message: ET.Element) -> None:
        items = message.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items")
        if items is None or items.get("node") != self.node:
            return
        now = self._loop.time()
        for item in items.findall(f"{{{NS_EVENT}}}item"):
            self.arrived.setdefault(item.get("id", ""), now)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float, progress: Progress | None = None
                       ) -> bool:
        deadline = self._loop.time() + timeout
        while len(self.arrived) < count:
            if progress is not None:
                progress.update(len(self.arrived))
            left = deadline - self._loop.time()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        if progress is not None:
            progress.update(len(self.arrived))
        return True

    def rate(self, first_n: int | None = None, start: float | None = None) -> float:
        """Items/s from ``start`` (or the first arrival) to the ``first_n``-th arrival."""
        times = sorted(self.arrived.values())[:first_n]
        if len(times) < 2:
            return float("nan")
        t0 = start if start is not None else times[0]
        n = len(times) if start is not None else len(times) - 1
        return n / max(times[-1] - t0, 1e-9)


# --------------------------------------------------------------------------- children


class Child:
    """A child process started by a benchmark; waits for a line that says it is ready."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.first_line = ""
        self._drain: asyncio.Task[None] | None = None

    def drain(self) -> None:
        """Keep reading stdout after the ready line, so a chatty child never blocks."""
        stdout = self.proc.stdout
        if stdout is None:
            return

        async def discard() -> None:
            while await stdout.read(65536):
                pass

        self._drain = asyncio.create_task(discard(), name=f"drain:{self.name}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def peak_rss_mib(self) -> float:
        return peak_rss_mib(self.proc.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    async def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        return self.proc.returncode


async def spawn(argv: Sequence[str], name: str, *, ready: str | None = None,
                timeout: float = 60.0) -> Child:
    """Start ``argv`` (stdout piped, stderr inherited); wait for a stdout line containing
    ``ready`` (or any first line when ``ready`` is None)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, env=env)
    child = Child(proc, name)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    raise RuntimeError(f"{name} exited before it was ready "
                                       f"(status {await proc.wait()})")
                line = raw.decode(errors="replace").strip()
                if ready is None or ready in line:
                    child.first_line = line
                    break
    except BaseException:
        await child.stop(5)
        raise
    child.drain()
    return child


def component_argv(config_path: Path, components: str) -> list[str]:
    return [sys.executable, "-m", "backchannel.cli", "run", "--components", components,
            "-c", str(config_path)]


async def run_component(config_path: Path, components: str) -> Child:
    """``backchannel run --components X -c FILE`` in a child; ready when it says so."""
    return await spawn(component_argv(config_path, components), components,
                       ready="backchannel running")


async def timed(coro: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await coro
    return time.perf_counter() - started


Maker = Callable[[int], list[Event]]


@dataclass
class Options:
    """What the runner passes to every benchmark's ``run``."""

    quick: bool = False
    shared: dict[str, float] = field(default_factory=dict)  # e.g. the ceiling for pipeline
    sizes: tuple[int, ...] | None = None  # backlog sizes override
