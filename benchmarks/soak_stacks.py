"""The two ways the soak runs the demo workload, and what each lets it watch.

:class:`DemoStack` is ``backchannel demo`` itself: the worker, gateway and bot share one
Python process with the demo site and the simulated sites, and the managed Prosody is its
child. What the demo site and the simulator keep (every applied callback, every sent id)
grows with the run by design, so that process's memory is product *and* harness.

:class:`SplitStack` runs the same configuration the demo writes, with each component in a
process of its own (``backchannel run --components X``), the demo site in another
(``python -m benchmarks.fakes``) and the simulated sites in another (``backchannel
simulate``): every component's memory and file descriptors are its own. The harness
processes are sampled and shown, but the verdict is about the product.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Protocol

from backchannel import config
from backchannel.localserver import managed_server
from backchannel.localserver.base import ManagedServer, free_port
from simulator.stack import StackOptions, stack_toml

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("worker", "gateway", "bot")
DEMO_UP = "backchannel demo is up"
DASHBOARD_RE = re.compile(r"Dashboard[^:]*:\s+(http://\S+?)/?\s*$", re.MULTILINE)
METRICS = {
    "events_in": "backchannel_events_in_total",
    "events_done": "backchannel_events_done_total",
    "ingested": "backchannel_ingest_events_published_total",
    "callbacks": "backchannel_callbacks_total",
    "queue_depth": "backchannel_queue_depth",
}


class StackError(Exception):
    """The workload could not be started; the message says where to look."""


class Stack(Protocol):
    judged: tuple[str, ...]  # process labels the verdict is about

    def start(self) -> None: ...
    def roots(self) -> dict[str, int]: ...  # label -> pid whose process tree is sampled
    def counters(self) -> dict[str, float] | None: ...
    def alive(self) -> str | None: ...  # None, or which process exited
    def stop(self) -> None: ...


def parse_metrics(text: str) -> dict[str, float]:
    """Sums of the demo counters in a Prometheus text exposition."""
    totals = dict.fromkeys(METRICS, 0.0)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        for key, metric in METRICS.items():
            if name == metric:
                with contextlib.suppress(IndexError, ValueError):
                    totals[key] += float(line.rsplit(" ", 1)[1])
    return totals


def read_metrics(gateway_url: str) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(f"{gateway_url}/metrics", timeout=10) as response:  # noqa: S310 - our own loopback gateway
            return parse_metrics(response.read().decode("utf-8", "replace"))
    except (OSError, urllib.error.URLError, ValueError):
        return None


def wait_for_line(proc: subprocess.Popen[bytes], log_path: Path, pattern: str,
                  timeout: float) -> str:
    """The log's text once it holds ``pattern``; StackError if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if pattern in text:
            return text
        if proc.poll() is not None:
            raise StackError(f"{log_path.name}: exited with status {proc.returncode} before "
                             f"saying {pattern!r}; see {log_path}")
        time.sleep(0.5)
    raise StackError(f"{log_path.name}: no {pattern!r} within {timeout:.0f} s; see {log_path}")


def launch(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 60.0) -> None:
    """SIGINT (a clean stop for every backchannel command), then SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)


class DemoStack:
    """``backchannel demo`` in one child process (see the module docstring)."""

    judged: tuple[str, ...] = ("backchannel", "prosody")

    def __init__(self, folder: Path, rate: float, port: int, startup_timeout: float) -> None:
        self.folder = folder
        self.rate = rate
        self.port = port
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.gateway_url = ""

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log_path = self.folder / "demo.log"
        self.proc = launch([sys.executable, "-m", "backchannel", "demo", "--rate",
                            f"{self.rate:g}", "--dir", str(self.folder), "--port",
                            str(self.port)], log_path)
        text = wait_for_line(self.proc, log_path, DEMO_UP, self.startup_timeout)
        found = DASHBOARD_RE.search(text)
        if found is None:
            raise StackError(f"the demo did not print its dashboard URL; see {log_path}")
        self.gateway_url = found.group(1)

    def roots(self) -> dict[str, int]:
        return {"backchannel": self.proc.pid} if self.proc else {}

    def counters(self) -> dict[str, float] | None:
        return read_metrics(self.gateway_url)

    def alive(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            return f"the demo (status {self.proc.returncode})"
        return None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


class SplitStack:
    """The demo's configuration, one process per component (see the module docstring)."""

    judged: tuple[str, ...] = (*COMPONENTS, "prosody")

    def __init__(self, folder: Path, rate: float, port: int, startup_timeout: float) -> None:
        self.folder = folder
        self.rate = rate
        self.port = port
        self.startup_timeout = startup_timeout
        self.server: ManagedServer | None = None
        self.prosody_pid = 0
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.fakes_out: IO[bytes] | None = None
        self.settings: config.Settings | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.server = managed_server("prosody", self.folder / "server")
        state = self.server.start()
        self.prosody_pid = state.pid or 0
        # The demo site, alone (its fake services are started too, and stay idle).
        fakes = subprocess.Popen([sys.executable, "-m", "benchmarks.fakes"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
        self.procs["demo site"] = fakes
        assert fakes.stdout is not None
        self.fakes_out = fakes.stdout
        ready = fakes.stdout.readline().decode(errors="replace").split()
        if len(ready) != 3 or ready[0] != "ready":
            raise StackError("benchmarks.fakes did not say 'ready <services> <site>'")
        text = stack_toml(state, StackOptions(
            var_dir=str(self.folder / "var"), site_url=ready[2], gateway_port=self.port,
            fast_retries=False, node_prefix="soak"))
        cfg = self.folder / "backchannel.toml"
        cfg.write_text(text)
        cfg.chmod(0o600)
        self.settings = config.load(cfg)
        boot = launch([sys.executable, "-m", "backchannel", "nodes", "bootstrap", "-c", str(cfg)],
                      self.folder / "bootstrap.log")
        if boot.wait(self.startup_timeout) != 0:
            raise StackError(f"node bootstrap failed; see {self.folder / 'bootstrap.log'}")
        for name in COMPONENTS:
            log_path = self.folder / f"{name}.log"
            self.procs[name] = launch([sys.executable, "-m", "backchannel", "run",
                                       "--components", name, "-c", str(cfg)], log_path)
            wait_for_line(self.procs[name], log_path, "backchannel running",
                          self.startup_timeout)
        self.procs["simulated sites"] = launch(
            [sys.executable, "-m", "backchannel", "simulate", "-c", str(cfg), "--rate",
             f"{self.rate:g}", "--transport", "both", "--gateway", self.gateway_url],
            self.folder / "simulate.log")

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def roots(self) -> dict[str, int]:
        roots = {name: proc.pid for name, proc in self.procs.items()}
        if self.prosody_pid:
            roots["prosody"] = self.prosody_pid
        return roots

    def counters(self) -> dict[str, float] | None:
        found = read_metrics(self.gateway_url)
        if found is None or self.settings is None:
            return found
        # The worker has no HTTP side of its own here: ask its store (read-only).
        store = Path(self.settings.worker.store)
        try:
            with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True,
                                                    timeout=5)) as db:
                total, done = db.execute(
                    "SELECT count(*), count(finished_at) FROM events").fetchone()
                (settled,) = db.execute(
                    "SELECT count(*) FROM callbacks WHERE state != 'pending'").fetchone()
        except sqlite3.Error:
            return found
        found.update(events_in=float(total), events_done=float(done),
                     queue_depth=float(total - done), callbacks=float(settled))
        return found

    def alive(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return f"{name} (status {proc.returncode})"
        return None

    def stop(self) -> None:
        order = ["simulated sites", *reversed(COMPONENTS), "demo site"]
        for name in order:
            proc = self.procs.get(name)
            if proc is not None:
                stop_process(proc, grace=30.0)
        if self.fakes_out is not None:
            self.fakes_out.close()
        if self.server is not None:
            self.server.stop()


def make_stack(split: bool, folder: Path, rate: float, port: int | None,
               startup_timeout: float) -> Stack:
    chosen = port or free_port()
    if split:
        return SplitStack(folder, rate, chosen, startup_timeout)
    return DemoStack(folder, rate, chosen, startup_timeout)
