"""What every managed local XMPP server has in common: folder layout, ports, accounts, state.

A managed server lives in one project-local folder (``var/server`` by default, a temp
folder in tests). The folder holds the generated server config, its data, its log, a
``state.json`` (kind, pid, ports, accounts) and a ``backchannel.toml`` that points every
backchannel component at it. Ports are free loopback ports picked at first start and
kept, so clients and the generated config stay valid across restarts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backchannel.errors import ServerError

log = logging.getLogger(__name__)

DOMAIN = "localhost"
# One account per component, plus an admin (owns the nodes) and a human operator.
COMPONENT_ACCOUNTS = ("admin", "worker", "gateway", "bot", "operator", "site")


@dataclass
class ServerState:
    """What ``state.json`` records about a managed server."""

    kind: str
    domain: str
    c2s_port: int
    http_port: int
    component_port: int
    pid: int | None = None
    accounts: dict[str, str] = field(default_factory=dict)

    @property
    def pubsub_service(self) -> str:
        return f"pubsub.{self.domain}"

    @property
    def muc_service(self) -> str:
        return f"conference.{self.domain}"

    def jid(self, account: str) -> str:
        return f"{account}@{self.domain}"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def offers_login(port: int, domain: str, timeout: float = 2.0) -> bool:
    """True once the server on ``port`` answers a stream header with SASL mechanisms.

    An open port is not enough: the kernel completes TCP handshakes as soon as the
    server listens, which can be before its event loop serves the virtual host.
    Stream features with ``<mechanisms>`` mean a login can be attempted now.
    """
    header = (f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
              "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(header.encode())
            received = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and b"</stream:features>" not in received:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
            return b"urn:ietf:params:xml:ns:xmpp-sasl" in received and b"<mechanism" in received
    except OSError:
        return False


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


class ManagedServer:
    """Base class: folder, state file, process lifecycle. Subclasses write configs."""

    kind = "base"
    start_timeout = 30.0

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.dir = Path(folder).absolute()
        self.state_file = self.dir / "state.json"
        self.log_file = self.dir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- state -----------------------------------------------------------------------
    def load_state(self) -> ServerState | None:
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ServerError(f"{self.state_file}: unreadable state ({exc})") from None
        return ServerState(**raw)

    def save_state(self, state: ServerState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        os.chmod(tmp, 0o600)  # it holds account passwords
        tmp.replace(self.state_file)

    def new_state(self) -> ServerState:
        return ServerState(
            kind=self.kind,
            domain=DOMAIN,
            c2s_port=free_port(),
            http_port=free_port(),
            component_port=free_port(),
            accounts={name: secrets.token_urlsafe(12) for name in COMPONENT_ACCOUNTS},
        )

    # -- lifecycle -------------------------------------------------------------------
    def status(self) -> tuple[bool, ServerState | None]:
        state = self.load_state()
        if state is None:
            return False, None
        return pid_alive(state.pid) and port_open(state.c2s_port), state

    def start(self) -> ServerState:
        """Start the server (creating config, ports and accounts on first start)."""
        self.check_installed()
        state = self.load_state()
        if state is not None and pid_alive(state.pid):
            if port_open(state.c2s_port):
                log.info("%s already running (pid %s)", self.kind, state.pid)
                return state
            self._kill(state.pid)
        fresh = state is None
        if state is None:
            state = self.new_state()
        elif state.kind != self.kind:
            raise ServerError(
                f"{self.dir} holds a {state.kind} server, not {self.kind}; use another folder"
            )
        # Ports picked earlier may have been taken meanwhile.
        for attr in ("c2s_port", "http_port", "component_port"):
            if port_open(getattr(state, attr)):
                raise ServerError(
                    f"port {getattr(state, attr)} ({attr}) of the managed server is in use "
                    f"by another program; stop it or remove {self.dir}"
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write_config(state)
        started = time.monotonic()
        with open(self.log_file, "ab") as out:
            self._proc = subprocess.Popen(
                self.command(state), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.dir, start_new_session=True,
                env=self.environment(),
            )
        state.pid = self._proc.pid
        self.save_state(state)
        try:
            self.wait_ready(state)
            self.after_start(state, fresh)
            if fresh:
                for name, password in state.accounts.items():
                    self._register_retrying(state, name, password)
        except BaseException:
            # Never leave a half-started server running behind an error.
            self._kill(state.pid)
            state.pid = None
            self.save_state(state)
            raise
        log.info("%s started on 127.0.0.1:%d in %.1f s (folder %s)", self.kind,
                 state.c2s_port, time.monotonic() - started, self.dir)
        return state

    def wait_ready(self, state: ServerState) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise ServerError(
                    f"{self.kind} exited with status {self._proc.returncode} at start; "
                    f"see {self.log_file}:\n{self.log_tail()}"
                )
            if port_open(state.c2s_port) and offers_login(state.c2s_port, state.domain):
                return
            time.sleep(0.05)
        raise ServerError(f"{self.kind} did not open port {state.c2s_port} and offer a login "
                          f"within {self.start_timeout:.0f} s; see {self.log_file}")

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the server; True if it was running."""
        state = self.load_state()
        if state is None or not pid_alive(state.pid):
            return False
        self._kill(state.pid, timeout)
        state.pid = None
        self.save_state(state)
        return True

    def _kill(self, pid: int | None, timeout: float = 15.0) -> None:
        if not pid:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                break
            time.sleep(0.05)
        else:
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing", self.kind, pid,
                        timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if self._proc is not None and self._proc.pid == pid:
            self._proc.wait(timeout=5)
            self._proc = None

    def adduser(self, name: str, password: str | None = None) -> str:
        """Create (or reset) an account on the running server; returns the password."""
        state = self.load_state()
        if state is None:
            raise ServerError(f"no managed server in {self.dir}; run `backchannel server start`")
        password = password or secrets.token_urlsafe(12)
        self._register_retrying(state, name, password)
        state.accounts[name] = password
        self.save_state(state)
        return password

    def _register_retrying(self, state: ServerState, name: str, password: str) -> None:
        """Register, retrying briefly: the running server may hold its database lock."""
        for attempt in range(5):
            try:
                self.register(state, name, password)
                return
            except ServerError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def run_tool(self, argv: list[str], what: str) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              cwd=self.dir, env=self.environment())
        if proc.returncode != 0:
            raise ServerError(f"{what} failed ({proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()[:400]}")
        return proc.stdout

    # -- what subclasses provide ----------------------------------------------------
    def check_installed(self) -> None:
        raise NotImplementedError

    def write_config(self, state: ServerState) -> None:
        raise NotImplementedError

    def command(self, state: ServerState) -> list[str]:
        raise NotImplementedError

    def register(self, state: ServerState, name: str, password: str) -> None:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def after_start(self, state: ServerState, fresh: bool) -> None:
        """Hook for work after the port opened (e.g. wait for full start)."""
