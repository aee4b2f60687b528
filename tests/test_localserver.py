"""The managed local XMPP servers: start, status, stop, restart on the same ports, adduser.

Prosody always; ejabberd when ``ejabberdctl`` is installed. Accounts are checked by
logging in over XMPP, not by asking the server's own tool.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from backchannel import config
from backchannel.errors import ServerError, ServerNotInstalled, XmppError
from backchannel.localserver import ServerState, config_toml, managed_server
from backchannel.localserver.base import port_open
from pubsub.connection import XmppConnection

if TYPE_CHECKING:
    from backchannel.localserver.ejabberd import EjabberdServer

HAVE = {"prosody": shutil.which("prosody") is not None,
        "ejabberd": shutil.which("ejabberdctl") is not None}
needs_prosody = pytest.mark.skipif(
    not HAVE["prosody"], reason="prosody is not installed (apt-get install prosody)")
needs_ejabberd = pytest.mark.skipif(
    not HAVE["ejabberd"], reason="ejabberdctl is not installed (apt-get install ejabberd)")
KINDS = [pytest.param("prosody", marks=needs_prosody),
         pytest.param("ejabberd", marks=needs_ejabberd)]


async def logs_in(state: ServerState, name: str, password: str, tmp: Path) -> bool:
    settings = config.loads(config_toml(state, var_dir=str(tmp), gateway_port=0))
    account = config.Account(jid=state.jid(name), password=config.Secret(password))
    conn = XmppConnection(settings.xmpp, account, resource="localserver-test")
    try:
        await conn.start(timeout=15)
        return True
    except XmppError as exc:
        print(f"login as {name} failed: {exc}")  # shown with the failure report
        return False
    finally:
        await conn.close()


def ports(state: ServerState) -> tuple[int, int, int]:
    return state.c2s_port, state.http_port, state.component_port


@pytest.fixture(scope="module")
def other_ejabberd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EjabberdServer]:
    """An ejabberd that keeps running while the tests start and stop their own."""
    from backchannel.localserver.ejabberd import EjabberdServer

    server = EjabberdServer(tmp_path_factory.mktemp("other-ejabberd"))
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_lifecycle(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    other = request.getfixturevalue("other_ejabberd") if kind == "ejabberd" else None
    server = managed_server(kind, tmp_path / "server")
    assert server.status() == (False, None)
    try:
        state = server.start()
        running, recorded = server.status()
        assert running and recorded == state and state.kind == kind
        # Prosody opens its component port only once an external component is defined.
        assert port_open(state.c2s_port) and port_open(state.http_port)
        if kind == "ejabberd":
            assert port_open(state.component_port)
        assert server.start().pid == state.pid  # already running: no second server
        assert await logs_in(state, "worker", state.accounts["worker"], tmp_path)
        assert not await logs_in(state, "worker", "not-the-password", tmp_path)

        password = server.adduser("alice", "first")
        assert password == "first"
        assert await logs_in(state, "alice", "first", tmp_path)
        server.adduser("alice", "second")  # an existing account gets the new password
        assert await logs_in(state, "alice", "second", tmp_path)
        assert not await logs_in(state, "alice", "first", tmp_path)

        assert state.pid is not None
        tree = [state.pid, *_descendants(state.pid)]
        assert server.stop() is True
        assert server.status()[0] is False
        assert not any(port_open(p) for p in ports(state))
        assert not [p for p in tree if _running(p)], "a server process outlived stop()"
        assert server.stop() is False
        if other is not None:
            assert other.status()[0], "stopping one ejabberd touched another"

        again = server.start()
        assert ports(again) == ports(state)
        assert again.pid != state.pid
        assert await logs_in(again, "alice", "second", tmp_path)  # data survived
    finally:
        server.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_refuses_a_folder_of_another_kind(kind: str, tmp_path: Path) -> None:
    other = "ejabberd" if kind == "prosody" else "prosody"
    server = managed_server(kind, tmp_path)
    state = server.new_state()
    state.kind = other
    server.save_state(state)
    with pytest.raises(ServerError, match=f"holds a {other} server"):
        server.start()


@pytest.mark.parametrize("kind", ["prosody", "ejabberd"])
def test_not_installed_says_how_to_install(kind: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ServerNotInstalled, match=f"apt-get install {kind}"):
        managed_server(kind, tmp_path).start()


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rfind(")") + 2:].split()[1])
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        out += children
        todo += children
    return out


@needs_ejabberd
def test_ejabberd_node_is_unique_per_folder_and_kept(other_ejabberd: EjabberdServer,
                                                     tmp_path: Path) -> None:
    from backchannel.localserver.ejabberd import EjabberdServer

    name, dist_port = other_ejabberd._node()
    assert EjabberdServer(other_ejabberd.dir)._node() == (name, dist_port)
    assert EjabberdServer(tmp_path)._node()[0] != name


@needs_ejabberd
def test_ejabberd_stops_an_orphaned_vm_on_start(other_ejabberd: EjabberdServer) -> None:
    """Only the ejabberdctl shell dies: its VM keeps the ports and the spool. The next start
    must find and stop that VM instead of failing on "port in use"."""
    state = other_ejabberd.load_state()
    assert state is not None and state.pid is not None
    vm = [p for p in _descendants(state.pid)
          if Path(f"/proc/{p}/comm").read_text().strip() == "beam.smp"]
    assert vm
    os.kill(state.pid, signal.SIGKILL)
    os.waitpid(state.pid, 0)  # our child: wait until it is really gone
    assert port_open(state.c2s_port)  # the VM lives on
    again = other_ejabberd.start()
    assert again.pid != state.pid and other_ejabberd.status()[0]
    assert ports(again) == ports(state)
    assert not [p for p in vm if _running(p)]


@needs_ejabberd
def test_ejabberd_failed_start_leaves_no_server_behind(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from backchannel.localserver.ejabberd import EjabberdServer

    monkeypatch.setattr(EjabberdServer, "is_started", lambda self: False)
    server = EjabberdServer(tmp_path)
    server.start_timeout = 1.0
    with pytest.raises(ServerError, match=r"did not (open port|finish starting)"):
        server.start()
    state = server.load_state()
    assert state is not None and state.pid is None
    assert not port_open(state.c2s_port)
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit()
                and _cmdline_has(p, str(tmp_path))], "a process of the failed start survived"


def _cmdline_has(proc: Path, text: str) -> bool:
    try:
        return text.encode() in (proc / "cmdline").read_bytes() and _running(int(proc.name))
    except OSError:
        return False
