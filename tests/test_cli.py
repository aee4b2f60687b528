"""The ``backchannel`` command as a user runs it: a subprocess, its exit code and its output.

Bad input exits 2 with exactly one line on stderr that names the problem; a failure of the
system exits 1. ``publish`` and ``tail`` run against the session's real managed server;
``server start|status|adduser|stop`` runs a second Prosody in a temp folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backchannel import config
from backchannel.errors import XmppError
from backchannel.localserver import ServerState, config_toml
from pubsub.connection import XmppConnection

COMMAND = [sys.executable, "-m", "backchannel.cli"]
needs_prosody = pytest.mark.skipif(shutil.which("prosody") is None,
                                   reason="prosody is not installed (apt-get install prosody)")


def environ() -> dict[str, str]:
    """The caller's environment without anything that would pick a config for us."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}


def run(*args: str, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], cwd=cwd, env={**environ(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Expect exit 2, nothing on stdout and one line on stderr; return that line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def usage_error(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return one_line(run(*args, cwd=cwd, env=env))


class Batch:
    """Runs many independent command lines at once (each costs an interpreter start-up),
    so the parametrized cases below only look their result up."""

    def __init__(self, cwd: Path, cases: Sequence[Sequence[str]]) -> None:
        self.cwd = cwd
        with ThreadPoolExecutor(max_workers=8) as pool:
            done = pool.map(lambda args: run(*args, cwd=cwd), cases)
            self.results = {tuple(args): proc for args, proc in zip(cases, done, strict=True)}

    def __getitem__(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return self.results[tuple(args)]


@pytest.fixture
def good_config(tmp_path: Path) -> Path:
    path = tmp_path / "good.toml"
    path.write_text('[xmpp]\nhost = "127.0.0.1"\nloopback_plaintext = true\n'
                    '[accounts.site]\njid = "site@localhost"\npassword = "s3cret-site-pw"\n'
                    '[[sites]]\nname = "shop"\nsource = "https://shop.example.com"\n'
                    '[sites.callback]\nurl = "https://shop.example.com/cb"\n'
                    'secret = "whsec-in-file-456"\n')
    return path


# ------------------------------------------------------------------------- help


def test_top_level_help(tmp_path: Path) -> None:
    proc = run("--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: backchannel ")
    for word in ("XMPP PubSub", "config", "server", "publish", "tail", "examples:",
                 "backchannel publish user.registered --source", "status 2"):
        assert word in proc.stdout


HELP = [
    ("config", ["secrets masked", "--json", "-c FILE"]),
    ("server", ["start", "adduser", "--dir", "backchannel.toml"]),
    ("nodes", ["bootstrap", "idempotent"]),
    ("publish", ["--source", "--data", "@FILE", "stored", "example: backchannel publish"]),
    ("tail", ["--json", "--last", "--count", "(default 10)", "Ctrl-C"]),
    ("run", ["worker", "gateway", "bot"]),
    ("demo", ["--check", "--events"]),
]


@pytest.mark.parametrize("command, words", HELP)
def test_subcommand_help(command: str, words: list[str], batch: Batch) -> None:
    proc = batch[(command, "--help")]
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith(f"usage: backchannel {command} ")
    for word in words:
        assert word in proc.stdout, word


def test_version(tmp_path: Path) -> None:
    proc = run("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("backchannel ")


# ------------------------------------------------------------------------- bad input


BAD_INPUT = [
    (["publish", "user.registered", "--source", "s", "--data", "{x"],
     "backchannel publish: --data is not JSON: Expecting property name enclosed in double "
     "quotes at column 2"),
    (["publish", "user.registered", "--data", "{}"],
     "backchannel publish: the following arguments are required: --source (see --help)"),
    (["publish", "User.Registered", "--source", "s"],
     "backchannel publish: attribute 'type' 'User.Registered' must be dotted lower-case "
     "words, like 'user.registered'"),
    (["publish", "user.registered", "--source", "s", "--id", "no spaces"],
     "backchannel publish: attribute 'id' must be 1-128 characters of letters, digits and "
     ". _ : - starting with a letter or digit"),
    (["publish", "user.registered", "--source", "s", "--data", "@missing.json"],
     "backchannel publish: cannot read missing.json: No such file or directory"),
    (["tail", "events", "--last", "-1"],
     "backchannel tail: --last and --count must not be negative"),
    (["tail", "events", "--count", "-3"],
     "backchannel tail: --last and --count must not be negative"),
    (["tail", "events", "--last", "ten"],
     "backchannel tail: argument --last: invalid int value: 'ten' (see --help)"),
    (["frobnicate"], "backchannel: unknown command 'frobnicate' (see backchannel --help)"),
    (["pubilsh", "x.y"],
     "backchannel: unknown command 'pubilsh' (did you mean 'publish'? see backchannel --help)"),
    (["config", "lint"], "backchannel config: argument action: invalid choice: 'lint' "
                         "(choose from 'check') (see --help)"),
    (["server", "adduser"], "backchannel server adduser: give an account name"),
]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    # An empty folder and no $BACKCHANNEL_*: no config anywhere.
    cwd = tmp_path_factory.mktemp("cli-batch")
    return Batch(cwd, [(command, "--help") for command, _ in HELP] +
                 [args for args, _ in BAD_INPUT])


@pytest.mark.parametrize("args, expected", BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(args: list[str], expected: str,
                                          batch: Batch) -> None:
    # No config anywhere: the command line is checked first, so its error is the one shown.
    assert one_line(batch[args]) == expected


def test_missing_config_file(tmp_path: Path) -> None:
    line = usage_error("config", "check", "-c", "nope.toml", cwd=tmp_path)
    assert line == "backchannel: config error: nope.toml: file not found"
    line = usage_error("publish", "user.registered", "--source", "s", cwd=tmp_path,
                       env={"BACKCHANNEL_CONFIG": "elsewhere.toml"})
    assert line == "backchannel: config error: elsewhere.toml: file not found"


def test_no_config_at_all(tmp_path: Path) -> None:
    line = usage_error("config", "check", cwd=tmp_path)
    assert line.startswith("backchannel: config error: no config file found: pass -c FILE")
    assert "backchannel server start" in line


@pytest.mark.parametrize("text, expected", [
    ("[xmpp]\nport = 0\n", "bad.toml: xmpp.port: must be a TCP port (1-65535), got 0"),
    ("[xmpp]\nhost = 'xmpp.example.com'\nloopback_plaintext = true\n",
     "bad.toml: xmpp.loopback_plaintext: plaintext is only allowed to a loopback server"),
    ("[accounts.worker]\njid = 'w@h'\n", "bad.toml: accounts.worker.password: missing (set it "
                                         "here or in $BACKCHANNEL_ACCOUNTS_WORKER_PASSWORD)"),
    ("[xmpp\n", "bad.toml: not valid TOML: "),
    ("colour = 'red'\n", "bad.toml: colour: unknown key (known: "),
])
def test_invalid_config(text: str, expected: str, tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(text)
    batch = Batch(tmp_path, [["config", "check", "-c", "bad.toml"],
                             ["publish", "user.registered", "--source", "s", "-c", "bad.toml"],
                             ["tail", "events", "-c", "bad.toml"]])
    for proc in batch.results.values():
        assert one_line(proc).startswith(f"backchannel: config error: {expected}")


def test_run_with_unknown_component(good_config: Path, tmp_path: Path) -> None:
    line = usage_error("run", "--components", "worker,blender", "-c", str(good_config),
                       cwd=tmp_path)
    assert line == ("backchannel run: unknown component(s) blender; choose from worker, "
                    "gateway, bot")


# ------------------------------------------------------------------------- config check


@pytest.mark.security
def test_config_check_masks_secrets(good_config: Path, tmp_path: Path) -> None:
    env = {"BACKCHANNEL_SITES_SHOP_CALLBACK_SECRET": "whsec-from-env-123"}
    proc = run("config", "check", "-c", str(good_config), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"# {good_config}: OK\n")
    assert "password: \"********\"" in proc.stdout
    for secret in ("s3cret-site-pw", "whsec-from-env-123", "whsec-in-file-456"):
        assert secret not in proc.stdout + proc.stderr
    as_json = run("config", "check", "--json", "-c", str(good_config), cwd=tmp_path, env=env)
    data = json.loads(as_json.stdout)
    assert data["accounts"]["site"]["password"] == "********"
    assert data["sites"][0]["callback"]["secret"] == "********"
    assert "s3cret-site-pw" not in as_json.stdout


def test_config_check_from_the_environment(good_config: Path, tmp_path: Path) -> None:
    proc = run("config", "check", cwd=tmp_path, env={"BACKCHANNEL_CONFIG": str(good_config)})
    assert proc.returncode == 0 and proc.stdout.startswith(f"# {good_config}: OK")


def test_example_config_passes_check(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "backchannel.example.toml"
    proc = run("config", "check", "-c", str(example), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "change-me" not in proc.stdout  # the placeholders are secrets too


def test_closed_pipe_is_not_an_error(good_config: Path, tmp_path: Path) -> None:
    """`backchannel config check | head -1` ends quietly."""
    proc = subprocess.Popen([*COMMAND, "config", "check", "-c", str(good_config)],
                            cwd=tmp_path, env=environ(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 0 and b"Traceback" not in err


# ------------------------------------------------------------------------- real server


def test_server_status_without_a_server(tmp_path: Path) -> None:
    proc = run("server", "status", "--dir", str(tmp_path / "none"), cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"backchannel server status: no managed server in {tmp_path / 'none'} "
        "(start one with `backchannel server start --dir DIR`)"]


async def wait_for_line(stream: asyncio.StreamReader, deadline: float) -> str:
    line = await asyncio.wait_for(stream.readline(), max(0.1, deadline - time.monotonic()))
    return line.decode()


async def test_publish_then_tail_sees_the_event(bootstrapped: config.Settings,
                                                server_state: ServerState,
                                                tmp_path: Path) -> None:
    cfg = tmp_path / "backchannel.toml"
    cfg.write_text(config_toml(server_state, var_dir=str(tmp_path), gateway_port=0))
    env = environ()
    tail = await asyncio.create_subprocess_exec(
        *COMMAND, "tail", "events", "--count", "1", "--json", "--last", "0", "-c", str(cfg),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert tail.stdout is not None and tail.stderr is not None
    try:
        deadline = time.monotonic() + 30
        ready = await wait_for_line(tail.stderr, deadline)  # printed once subscribed
        assert ready.startswith("tailing backchannel.events as operator@localhost/"), ready
        data = {"user_id": "42", "name": "Zoë", "address": "Toluca Lake, CA"}
        published = await asyncio.to_thread(
            run, "publish", "user.registered", "--source", "https://shop.example.com",
            "--data", json.dumps(data), "-c", str(cfg), cwd=tmp_path)
        assert published.returncode == 0, published.stderr
        event_id = published.stdout.strip()
        assert len(event_id) == 26 and published.stderr == ""
        line = await wait_for_line(tail.stdout, deadline)
        item = json.loads(line)
        assert (item["id"], item["type"], item["data"]) == (event_id, "user.registered", data)
        assert await asyncio.wait_for(tail.wait(), 15) == 0  # --count 1: done
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()


async def test_tail_shows_retained_items_first(bootstrapped: config.Settings,
                                               server_state: ServerState,
                                               tmp_path: Path) -> None:
    cfg = tmp_path / "backchannel.toml"
    cfg.write_text(config_toml(server_state, var_dir=str(tmp_path), gateway_port=0))
    data = tmp_path / "data.json"
    data.write_text('{"user_id": "7", "email": "x@example.com"}')
    published = await asyncio.to_thread(
        run, "publish", "user.profile_changed", "--source", "https://shop.example.com",
        "--data", f"@{data}", "-c", str(cfg), cwd=tmp_path)
    assert published.returncode == 0, published.stderr
    event_id = published.stdout.strip()
    tail = await asyncio.create_subprocess_exec(
        *COMMAND, "tail", "events", "--last", "1", "-c", str(cfg), cwd=tmp_path,
        env=environ(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert tail.stdout is not None
    try:
        line = await wait_for_line(tail.stdout, time.monotonic() + 30)
        assert "user.profile_changed" in line and event_id in line
        assert '"email": "x@example.com"' in line
    finally:
        tail.terminate()
        await tail.wait()


async def test_publish_with_a_wrong_password_fails_with_1(server_state: ServerState,
                                                          tmp_path: Path) -> None:
    state = ServerState(**{**server_state.__dict__,
                           "accounts": {**server_state.accounts, "site": "wrong"}})
    cfg = tmp_path / "backchannel.toml"
    cfg.write_text(config_toml(state, var_dir=str(tmp_path), gateway_port=0))
    proc = await asyncio.to_thread(run, "publish", "user.registered", "--source", "s",
                                   "-c", str(cfg), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("backchannel: ")
    assert "wrong" not in proc.stderr and "Traceback" not in proc.stderr


async def logs_in(settings: config.Settings, jid: str, password: str) -> bool:
    conn = XmppConnection(settings.xmpp, config.Account(jid, config.Secret(password)),
                          resource="cli-test")
    try:
        await conn.start(timeout=15)
        return True
    except XmppError:
        return False
    finally:
        await conn.close()


@needs_prosody
async def test_server_start_status_adduser_stop(tmp_path: Path) -> None:
    folder = tmp_path / "server"
    started = await asyncio.to_thread(run, "server", "start", "--dir", str(folder),
                                      "--gateway-port", "0", cwd=tmp_path)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith("prosody running on 127.0.0.1:")
        assert f"config for backchannel: {folder / 'backchannel.toml'}" in started.stdout
        checked = run("config", "check", "-c", str(folder / "backchannel.toml"), cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr
        settings = config.load(folder / "backchannel.toml")
        # The README's `publish --source https://shop.example.com` works at once.
        shop = settings.site_by_source("https://shop.example.com")
        assert shop is not None and shop.secret and shop.secret.reveal() not in checked.stdout

        status = run("server", "status", "--dir", str(folder), cwd=tmp_path)
        assert status.returncode == 0 and status.stdout.startswith("prosody running: 127.0.0.1:")
        assert "accounts admin, bot, gateway, operator, site, worker" in status.stdout

        added = await asyncio.to_thread(run, "server", "adduser", "alice", "--password",
                                        "alice-pw-1", "--dir", str(folder), cwd=tmp_path)
        assert added.returncode == 0 and added.stdout == "alice@localhost / alice-pw-1\n"
        assert await logs_in(settings, "alice@localhost", "alice-pw-1")
        assert not await logs_in(settings, "alice@localhost", "not-it")
        assert await logs_in(settings, settings.account("worker").jid,
                             settings.account("worker").password.reveal())
    finally:
        stopped = await asyncio.to_thread(run, "server", "stop", "--dir", str(folder),
                                          cwd=tmp_path)
    assert stopped.returncode == 0 and stopped.stdout == "stopped\n"
    status = run("server", "status", "--dir", str(folder), cwd=tmp_path)
    assert status.returncode == 1 and status.stdout.startswith("prosody stopped: ")
    again = run("server", "stop", "--dir", str(folder), cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == "not running\n"
