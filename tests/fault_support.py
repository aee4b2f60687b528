"""What every fault test shares: a worker process to kill, a steady publisher, the ledger
that proves nothing was lost or done twice, and the JSON record for the reliability report.

Why one ledger: every scenario ends with the same four questions (was an accepted event
lost? was a side effect applied twice? did every event end done or dead-lettered with a
reason? did the components come back on their own, and how fast?). :func:`settle` waits
for the answer and :func:`check_ledger` asks them against the worker's SQLite store (read
from outside, so it works the same for a worker process that was ``kill -9``-ed) and the
demo site's counters. The figures go into ``test-artifacts/fault-<scenario>-<server>.json``
whether the test passed or not; ``python -m benchmarks.reliability_report`` turns them into
``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from backchannel import config
from backchannel.errors import NotConnected, XmppError
from gateway.auth import signed_headers
from pubsub.envelope import Event, make_event
from simulator.demosite import DemoSite
from simulator.gazetteer import gazetteer
from simulator.stack import SITE_NAME, SITE_SECRET, SITE_SOURCE
from tests.pipeline_harness import Pipeline, wait_until

ARTIFACTS = Path(os.environ.get("BACKCHANNEL_ARTIFACTS",
                                Path(__file__).resolve().parents[1] / "test-artifacts"))
#: The retry block stack_toml writes for every service (fast, for ordinary tests).
FAST_RETRY = ("max_attempts = 5\nbackoff_initial = 0.05\nbackoff_max = 0.5\n"
              "breaker_threshold = 5\nbreaker_reset = 0.5\ntimeout = 2.0\n")
FAST_CALLBACKS = "callback_time_scale = 0.002"
#: Callbacks in flight at once (WorkerSettings.callback_concurrency): what one crash can
#: leave delivered-but-unrecorded, so at most this many redeliveries per fault.
CALLBACK_CONCURRENCY = 16


# -- the record ----------------------------------------------------------------------------

@dataclass
class FaultRecord:
    """One scenario's figures, as the reliability report reads them."""

    scenario: str
    server: str
    mode: str  # "ci" or "long"
    description: str = ""
    faults_injected: int = 0
    events_accepted: int = 0
    done: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicate_effects: int = 0  # succeeded work done again (a second "ok" in the store)
    site_redeliveries: int = 0  # callbacks the site recognised by id and did not re-apply
    recovery_s: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    passed: bool = False
    error: str = ""
    finished_at: str = ""


@contextlib.contextmanager
def fault_record(scenario: str, server: str, long_mode: bool,
                 description: str) -> Iterator[FaultRecord]:
    """Yield the record; write it to test-artifacts/ when the block ends, failed or not."""
    record = FaultRecord(scenario, server, "long" if long_mode else "ci", description)
    started = time.monotonic()
    try:
        yield record
        record.passed = True
    except BaseException as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:600]
        raise
    finally:
        record.duration_s = round(time.monotonic() - started, 1)
        record.recovery_s = [round(r, 3) for r in record.recovery_s]
        record.finished_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        out = ARTIFACTS / f"fault-{scenario}-{server}.json"
        out.write_text(json.dumps(asdict(record), indent=2) + "\n")


# -- events --------------------------------------------------------------------------------

def registrations(n: int, prefix: str) -> list[Event]:
    """``n`` sign-ups with distinct real city addresses, so the geocoder's cache does not
    hide an outage (each address is a real call)."""
    cities = gazetteer().cities
    return [
        make_event("user.registered", SITE_SOURCE, {
            "user_id": f"{prefix}{i}", "name": f"User {prefix}{i}",
            "email": f"{prefix}{i}@example.com",
            "address": cities[(i * 7919) % len(cities)].address,
        })
        for i in range(n)
    ]


class SteadyPublisher:
    """A site publishing at a steady rate over XMPP, retrying while the server is away.

    An event counts as accepted once a publish of it came back (the server stored it);
    a publish that timed out is retried with the same id, which is harmless.
    """

    def __init__(self, p: Pipeline) -> None:
        self.p = p
        self.accepted: dict[str, float] = {}  # event id -> monotonic time of acceptance
        self.retries = 0

    async def one(self, event: Event) -> None:
        while True:
            try:
                await self.p.publisher.publish(self.p.settings.nodes.events, event,
                                               wait_connected=10)
                self.accepted[event.id] = time.monotonic()
                return
            except (NotConnected, XmppError):
                self.retries += 1
                await asyncio.sleep(0.2)

    async def run(self, events: Sequence[Event], rate: float, window: int = 64) -> None:
        """Publish ``events`` at ``rate`` per second (at most ``window`` in flight)."""
        sem = asyncio.Semaphore(window)
        start = time.monotonic()
        pending: set[asyncio.Task[None]] = set()

        async def guarded(event: Event) -> None:
            try:
                await self.one(event)
            finally:
                sem.release()

        for i, event in enumerate(events):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not waiting for a result
            await sem.acquire()
            task = asyncio.create_task(guarded(event))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)


class HttpPublisher(SteadyPublisher):
    """The same site, publishing through the gateway's ``POST /v1/events``.

    202 means accepted; a 503 (the gateway lost its XMPP session) or a refused connection
    is retried with the same event id, as the 503's problem document asks.
    """

    def __init__(self, p: Pipeline, session: aiohttp.ClientSession, url: str) -> None:
        super().__init__(p)
        self.session = session
        self.url = f"{url}/v1/events"
        self.refused: dict[int, int] = {}  # HTTP status -> how often (0: no connection)

    async def one(self, event: Event) -> None:
        body = json.dumps(event.to_dict()).encode()
        while True:
            headers = signed_headers(SITE_NAME, SITE_SECRET, body)
            headers["Content-Type"] = "application/json"
            try:
                async with self.session.post(self.url, data=body, headers=headers) as answer:
                    status = answer.status
                    await answer.read()
            except aiohttp.ClientError:
                status = 0
            if status == 202:
                self.accepted[event.id] = time.monotonic()
                return
            assert status in (0, 503), f"the gateway answered {status} to a valid event"
            self.refused[status] = self.refused.get(status, 0) + 1
            self.retries += 1
            await asyncio.sleep(0.2)


class SseReader:
    """A display reading a feed from the gateway, reconnecting with ``Last-Event-ID``
    whenever the stream ends (as a browser's EventSource does).

    A slow consumer: clear :attr:`flowing` and it stops reading (the gateway's writes
    back up into its queue for this client); set it and it reads on.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str, feed: str) -> None:
        self.session = session
        self.url = f"{url}/v1/feeds/{feed}"
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.ids: list[str] = []
        self.connects = 0
        self.last_id: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def distinct(self) -> set[str]:
        return set(self.ids)

    async def _run(self) -> None:
        while True:
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                async with self.session.get(self.url, headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=None)) as r:
                    if r.status != 200:
                        await asyncio.sleep(0.5)
                        continue
                    self.connects += 1
                    await self._read(r)
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.2)  # the stream ended: reconnect, like EventSource

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        fields: dict[str, str] = {}
        while True:
            await self.flowing.wait()
            line = await response.content.readline()
            if not line:
                return
            text = line.decode().rstrip("\n")
            if text == "":
                if fields.get("event") == "feed" and "id" in fields:
                    self.ids.append(fields["id"])
                    self.last_id = fields["id"]
                fields = {}
            elif not text.startswith(":"):
                name, _, value = text.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value


def small_window_session() -> aiohttp.ClientSession:
    """An HTTP client whose sockets have a 4 KiB receive buffer: when it stops reading,
    the sender notices within a few messages instead of filling megabytes of kernel
    buffer first (loopback autotuning would otherwise hide a slow reader for minutes)."""

    def factory(addr: Any) -> socket.socket:
        family, kind, proto, _, _ = addr
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return sock

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=factory))


# -- a worker process ----------------------------------------------------------------------

class WorkerProcess:
    """``backchannel run --components worker`` (or other components) as a child process
    that can be killed."""

    def __init__(self, config_file: Path, log: Path, components: str = "worker") -> None:
        self.config_file = config_file
        self.log = log
        self.components = components
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child, closed with it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backchannel.cli", "run", "--components", self.components,
             "-c", str(self.config_file)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.starts += 1

    async def running(self, timeout: float = 60) -> None:
        want = self.starts

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the worker exited with {self.proc.returncode}; "
                                     f"log:\n{self.log.read_text(errors='replace')[-3000:]}")
            return self.log.read_bytes().count(b"backchannel running") >= want

        await wait_until(ready, timeout, "the worker process to start")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM (graceful), SIGKILL after 20 s; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


# -- configuration -------------------------------------------------------------------------

def retune(p: Pipeline, *, services: str | None = None,
           callback_time_scale: float | None = None, gateway_port: int | None = None) -> None:
    """Rewrite the pipeline's config (all services' retry block, the callback schedule's
    time scale, the gateway's port) and reload it, before any component starts."""
    text = p.config_file.read_text()
    if gateway_port is not None:
        assert "[gateway]\nport = 0\n" in text
        text = text.replace("[gateway]\nport = 0\n", f"[gateway]\nport = {gateway_port}\n")
    if services is not None:
        assert FAST_RETRY in text
        text = text.replace(FAST_RETRY, services)
    if callback_time_scale is not None:
        assert FAST_CALLBACKS in text
        text = text.replace(FAST_CALLBACKS, f"callback_time_scale = {callback_time_scale:g}")
    p.config_file.write_text(text)
    p.settings = config.load(p.config_file)


def production_retry(scale: float) -> str:
    """The default retry policy of ServiceSettings with its times multiplied by ``scale``:
    a CI run is a compressed copy of the long run, not a different policy."""
    d = config.ServiceSettings(name="x")
    return (f"max_attempts = {d.max_attempts}\nbackoff_initial = {d.backoff_initial * scale:g}\n"
            f"backoff_max = {d.backoff_max * scale:g}\n"
            f"breaker_threshold = {d.breaker_threshold}\n"
            f"breaker_reset = {d.breaker_reset * scale:g}\ntimeout = 2.0\n")


# -- the ledger ----------------------------------------------------------------------------

@dataclass
class StoreView:
    """What the worker's store says, read from outside the worker."""

    states: dict[str, str]
    task_dead: dict[str, list[str]]  # event id -> reasons of its active task dead letters
    callback_dead: dict[str, list[str]]
    callback_states: dict[str, str]
    ok_twice: list[tuple[str, str, int]]


def read_store(db: Path) -> StoreView:
    if not db.exists():
        return StoreView({}, {}, {}, {}, [])
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        states = dict(conn.execute("SELECT id, state FROM events").fetchall())
        task_dead: dict[str, list[str]] = {}
        callback_dead: dict[str, list[str]] = {}
        for event_id, kind, reason in conn.execute(
                "SELECT event_id, kind, reason FROM deadletters WHERE state = 'active'"):
            into = callback_dead if kind == "callback" else task_dead
            into.setdefault(event_id, []).append(reason)
        callback_states = dict(conn.execute("SELECT event_id, state FROM callbacks").fetchall())
        ok_twice = conn.execute(
            "SELECT event_id, what, COUNT(*) FROM attempts WHERE outcome = 'ok' "
            "GROUP BY event_id, what HAVING COUNT(*) > 1").fetchall()
    return StoreView(states, task_dead, callback_dead, callback_states, ok_twice)


def settled(view: StoreView, site: DemoSite, accepted: Sequence[str]) -> bool:
    """Every accepted event finished, and its callback applied or dead-lettered."""
    for event_id in accepted:
        if view.states.get(event_id) not in ("done", "failed"):
            return False
        if event_id not in site.applied and view.callback_states.get(event_id) != "dead":
            return False
    return True


async def settle(db: Path, site: DemoSite, accepted: Sequence[str], timeout: float) -> float:
    """Wait until :func:`settled`; return when (monotonic). On timeout, say what is stuck."""
    deadline = time.monotonic() + timeout
    while True:
        view = await asyncio.to_thread(read_store, db)
        if settled(view, site, accepted):
            return time.monotonic()
        if time.monotonic() > deadline:
            missing = [i for i in accepted if i not in view.states]
            counts: dict[str, int] = {}
            for i in accepted:
                state = view.states.get(i, "missing")
                counts[state] = counts.get(state, 0) + 1
            unapplied = [i for i in accepted if i not in site.applied]
            raise AssertionError(
                f"not settled after {timeout:.0f} s: event states {counts}, "
                f"{len(missing)} never taken in (e.g. {missing[:3]}), "
                f"{len(unapplied)} callbacks not applied (e.g. {unapplied[:3]}, callback "
                f"states {[view.callback_states.get(i) for i in unapplied[:3]]})")
        await asyncio.sleep(0.25)


def check_ledger(record: FaultRecord, db: Path, site: DemoSite, accepted: Sequence[str],
                 *, max_redeliveries: int) -> None:
    """Fill the record's counts and assert the reliability model held."""
    view = read_store(db)
    accepted_set = set(accepted)
    record.events_accepted = len(accepted_set)
    record.done = sum(view.states.get(i) == "done" for i in accepted_set)
    failed = [i for i in accepted_set if view.states.get(i) == "failed"]
    callback_dead = [i for i in accepted_set if view.callback_states.get(i) == "dead"]
    record.dead_lettered = len(set(failed) | set(callback_dead))
    lost = [i for i in accepted_set if view.states.get(i) not in ("done", "failed")]
    lost += [i for i in accepted_set if i not in site.applied and i not in callback_dead]
    record.lost = len(set(lost))
    record.duplicate_effects = len(view.ok_twice)
    record.site_redeliveries = site.duplicates
    record.extra["callbacks_dead_lettered"] = len(callback_dead)
    record.extra["events_failed"] = len(failed)

    assert not lost, f"{len(set(lost))} accepted events lost, e.g. {sorted(set(lost))[:5]}"
    no_reason = [i for i in failed if not any(r.strip() for r in view.task_dead.get(i, []))]
    no_reason += [i for i in callback_dead
                  if not any(r.strip() for r in view.callback_dead.get(i, []))]
    assert not no_reason, f"dead-lettered without a reason: {no_reason[:5]}"
    assert not view.ok_twice, f"succeeded work ran again: {view.ok_twice[:5]}"
    assert site.received == len(site.applied) + site.duplicates
    assert set(site.applied) <= accepted_set | set(view.states), "the site applied a stranger"
    assert site.duplicates <= max_redeliveries, (
        f"{site.duplicates} callbacks delivered again (at most {max_redeliveries} can be in "
        "flight when a fault strikes): the worker re-sent callbacks it had recorded as done")
