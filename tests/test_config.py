"""Settings (backchannel.config): every rule's error names the file and the key, secrets come
from the environment and never print, and the shipped configs load.

The example file at the repo root is loaded as a user would, and checked to mention
every setting the code has, so it cannot silently fall behind.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from backchannel import config
from backchannel.config import Secret, Settings, env_name, load, loads, to_masked_dict
from backchannel.errors import ConfigError
from backchannel.localserver import ServerState, config_toml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "backchannel.example.toml"
LOCAL = '[xmpp]\nhost = "127.0.0.1"\nloopback_plaintext = true\n'
ACCOUNT = '[accounts.worker]\njid = "worker@localhost"\npassword = "pw-1"\n'
SITE = '[[sites]]\nname = "shop"\nsource = "https://shop.example.com"\n'


def error(text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loads(text, env=env or {}, name="site.toml")
    return info.value


def assert_error(text: str, key: str, reason: str, env: dict[str, str] | None = None) -> None:
    """The error names file and key, and its reason contains ``reason`` (a regex)."""
    exc = error(text, env)
    assert (exc.file, exc.key) == ("site.toml", key), str(exc)
    assert re.search(reason, exc.reason), exc.reason
    assert str(exc) == f"site.toml: {key}: {exc.reason}"


# ------------------------------------------------------------------------- rules


@pytest.mark.parametrize("text, key", [
    ("colour = 1", "colour"),
    ("[xmpp]\nhots = 'x'", "xmpp.hots"),
    ("[nodes]\nevent = 'x'", "nodes.event"),
    ("[accounts.worker]\njid = 'w@h'\npassword = 'p'\npasswd = 'p'", "accounts.worker.passwd"),
    (SITE + "secrit = 'x'", "sites[0].secrit"),
    (SITE + "[sites.callback]\nurl = 'https://a.example/cb'\nsecret = 's'\nretries = 3",
     "sites[0].callback.retries"),
    ("[worker]\nthreads = 3", "worker.threads"),
    ("[[worker.routes]]\npattern = 'a.*'\ntasks = []\nwhen = 1", "worker.routes[0].when"),
    ("[bot]\nadmins = []", "bot.admins"),
    ("[gateway]\nlisten = 'x'", "gateway.listen"),
    ("[limits]\nmax_bytes = 1", "limits.max_bytes"),
])
def test_unknown_key(text: str, key: str) -> None:
    assert_error(text, key, r"^unknown key \(known: ")


def test_unknown_key_lists_the_known_ones() -> None:
    assert "host, keepalive_interval, loopback_plaintext" in error("[xmpp]\nhots = 1").reason


@pytest.mark.parametrize("text, key, reason", [
    ("[xmpp]\nport = '5222'", "xmpp.port", "must be int, got str"),
    ("[xmpp]\nport = true", "xmpp.port", "must be an integer, got a boolean"),
    ("[xmpp]\nport = 5222.0", "xmpp.port", "must be int, got float"),
    ("[xmpp]\nloopback_plaintext = 'yes'", "xmpp.loopback_plaintext", "must be bool, got str"),
    ("[xmpp]\nrequest_timeout = '15s'", "xmpp.request_timeout", "must be float, got str"),
    ("xmpp = 3", "xmpp", "must be a table, got int"),
    ("[nodes]\nfeeds = 'signups'", "nodes.feeds", "must be a list of strings"),
    ("[nodes]\nfeeds = ['ok', 3]", "nodes.feeds", "must be a list of strings"),
    ("[nodes]\nfeeds = ['Sign Ups']", "nodes.feeds", "feed name 'Sign Ups' must be 1-63"),
    ("[nodes]\nevents = 'a/b'", "nodes.events", "without slashes or spaces"),
    ("[nodes]\nfeed_access = 'closed'", "nodes.feed_access", "must be one of open, whitelist"),
    ("[xmpp]\nserver_kind = 'jabberd'", "xmpp.server_kind", "must be one of prosody, ejabberd"),
    ("sites = {}", "sites", r"must be an array of tables \(\[\[sites\]\]\)"),
    ("[worker]\nunknown_types = 'drop'", "worker.unknown_types", "ignore, deadletter"),
    ("[worker]\ncallback_concurrency = 0", "worker.callback_concurrency",
     "must be greater than 0, got 0"),
    ("[services.crm]\nrate_per_second = -1", "services.crm.rate_per_second",
     "must not be negative, got -1.0"),
    ("[services.crm]\ntimeout = nan", "services.crm.timeout", "must be a finite number, got nan"),
    ("[xmpp]\nreconnect_max_delay = inf", "xmpp.reconnect_max_delay", "must be a finite number"),
    ("[services.crm]\nrate_per_second = inf", "services.crm.rate_per_second", "finite"),
    ("services = {crm = 3}", "services.crm", "must be a table"),
    (SITE.replace('"shop"', '"Shop!"'), "sites[0].name", "must be 1-63 lower-case letters"),
    (SITE.replace('"shop"', '"shop\\n"'), "sites[0].name", "must be 1-63 lower-case letters"),
    ('[[sites]]\nname = "shop"', "sites[0].source", "missing"),
    (SITE + "[sites.callback]\nurl = 'ftp://x'", "sites[0].callback.url", "http\\(s\\) URL"),
    (SITE + "[sites.callback]\nurl = 'https://a.example/'\nprotocol = 'soap'",
     "sites[0].callback.protocol", "must be one of xmlrpc, webhook"),
    ("[xmpp]\nhost = '127.0.0.1'\nloopback_plaintext = true\ndirect_tls = true",
     "xmpp.direct_tls", "contradicts loopback_plaintext"),
])
def test_wrong_type_or_value(text: str, key: str, reason: str) -> None:
    assert_error(text, key, reason)


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_bad_xmpp_port(port: int) -> None:
    assert_error(f"[xmpp]\nport = {port}", "xmpp.port",
                 rf"must be a TCP port \(1-65535\), got {port}")


@pytest.mark.parametrize("port", [-1, 65536])
def test_bad_gateway_port(port: int) -> None:
    assert_error(f"[gateway]\nport = {port}", "gateway.port",
                 rf"must be a TCP port \(0-65535\), got {port}")


def test_gateway_port_zero_means_any_free_port() -> None:
    assert loads("[gateway]\nport = 0", env={}).gateway.port == 0


@pytest.mark.parametrize("host", ["xmpp.example.com", "10.0.0.5", "192.168.1.1", "::2",
                                  "localhost.evil.com"])
@pytest.mark.security
def test_plaintext_to_a_non_loopback_host_is_refused(host: str) -> None:
    assert_error(f"[xmpp]\nhost = '{host}'\nloopback_plaintext = true",
                 "xmpp.loopback_plaintext",
                 "plaintext is only allowed to a loopback server, and host is "
                 rf"'{re.escape(host)}'")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "localhost",
                                  "dev.localhost"])
@pytest.mark.security
def test_plaintext_to_loopback_is_allowed(host: str) -> None:
    settings = loads(f"[xmpp]\nhost = '{host}'\nloopback_plaintext = true", env={})
    assert settings.xmpp.loopback_plaintext and settings.xmpp.host == host


@pytest.mark.security
def test_tls_is_the_default() -> None:
    assert loads("[xmpp]\nhost = 'xmpp.example.com'", env={}).xmpp.loopback_plaintext is False


@pytest.mark.parametrize("jid", ["", "worker", "@localhost", "worker@", "a@b@c", "wo rker@host",
                                 "worker@host/", "worker@host/a b"])
def test_bad_jid(jid: str) -> None:
    assert_error(f"[accounts.worker]\njid = {json.dumps(jid)}\npassword = 'p'",
                 "accounts.worker.jid", "must be a JID like name@domain")


def test_jid_with_resource_is_fine() -> None:
    account = loads("[accounts.w]\njid = 'w@h/r1'\npassword = 'p'", env={}).account("w")
    assert (account.jid, account.bare) == ("w@h/r1", "w@h")


def test_missing_password_names_the_env_var() -> None:
    assert_error("[accounts.worker]\njid = 'w@h'", "accounts.worker.password",
                 r"missing \(set it here or in \$BACKCHANNEL_ACCOUNTS_WORKER_PASSWORD\)")
    # The hint follows the same rule as the lookup, also for names with dashes.
    assert_error("[accounts.my-bot]\njid = 'b@h'", "accounts.my-bot.password",
                 r"\$BACKCHANNEL_ACCOUNTS_MY_BOT_PASSWORD\)")
    settings = loads("[accounts.my-bot]\njid = 'b@h'",
                     env={"BACKCHANNEL_ACCOUNTS_MY_BOT_PASSWORD": "from-env"})
    assert settings.account("my-bot").password.reveal() == "from-env"


def test_an_account_that_is_not_configured() -> None:
    with pytest.raises(ConfigError) as info:
        loads("", env={}, name="x.toml").account("worker")
    assert (info.value.file, info.value.key) == ("x.toml", "accounts.worker")
    assert "add [accounts.worker] with jid and password" in str(info.value)


@pytest.mark.parametrize("second", [
    '[[sites]]\nname = "shop"\nsource = "https://other.example.com"',
    '[[sites]]\nname = "other"\nsource = "https://shop.example.com"',
])
def test_site_declared_twice(second: str) -> None:
    assert_error(SITE + second, "sites[1]", "is declared twice")


def test_webhook_callback_needs_a_secret() -> None:
    text = SITE + "[sites.callback]\nurl = 'https://shop.example.com/cb'"
    assert_error(text, "sites[0].callback.secret", "a webhook callback needs a signing secret")
    env = {"BACKCHANNEL_SITES_SHOP_CALLBACK_SECRET": "whsec-env"}
    callback = loads(text, env=env).sites[0].callback
    assert callback is not None and callback.secret.reveal() == "whsec-env"
    xmlrpc = loads(text + "\nprotocol = 'xmlrpc'", env={}).sites[0].callback
    assert xmlrpc is not None and xmlrpc.protocol == "xmlrpc" and not xmlrpc.secret


@pytest.mark.parametrize("text, key, reason", [
    ("[worker]\nroutes = 'user.*'", "worker.routes", "must be an array of tables"),
    ("[worker]\nroutes = [3]", "worker.routes[0]", "must be a table with pattern and tasks"),
    ("[[worker.routes]]\ntasks = ['crm']", "worker.routes[0].pattern", "missing"),
    ("[[worker.routes]]\npattern = 'user.*'", "worker.routes[0].tasks", r"missing .*\[\]"),
    ("[[worker.routes]]\npattern = 'user.*'\ntasks = 'crm'", "worker.routes[0].tasks",
     "must be a list of strings"),
    ("[[worker.routes]]\npattern = 'a.*'\ntasks = []\n[[worker.routes]]\npattern = 'b.*'\n"
     "tasks = ['Geo Code']", "worker.routes[1].tasks", "task name 'Geo Code' must be 1-63"),
])
def test_bad_route(text: str, key: str, reason: str) -> None:
    assert_error(text, key, reason)


def test_routes_replace_the_defaults_in_order() -> None:
    settings = loads("[[worker.routes]]\npattern = 'user.*'\ntasks = ['crm']\n"
                     "[[worker.routes]]\npattern = 'noise.*'\ntasks = []", env={})
    assert settings.worker.routes == (config.Route("user.*", ("crm",)),
                                      config.Route("noise.*", ()))
    assert loads("", env={}).worker.routes == config.WorkerSettings().routes


@pytest.mark.parametrize("jid, role, reason", [
    ("ops@example.com", "root", "role must be viewer, operator or admin, got 'root'"),
    ("ops@example.com", "Admin", "role must be viewer, operator or admin"),
    ("ops@example.com/phone", "admin", r"must be a bare JID \(name@domain\)"),
    ("room@conference.example.com/nick", "viewer", "must be a bare JID"),
    ("nobody", "admin", "must be a bare JID"),
    ("@example.com", "admin", "must be a bare JID"),
])
@pytest.mark.security
def test_bad_role(jid: str, role: str, reason: str) -> None:
    assert_error(f'[bot.roles]\n"{jid}" = "{role}"', f"bot.roles.{jid}", reason)


def test_roles_are_keyed_by_lower_case_bare_jid() -> None:
    roles = loads('[bot.roles]\n"Ops@Example.com" = "admin"', env={}).bot.roles
    assert roles == {"ops@example.com": "admin"}


@pytest.mark.parametrize("value, reason", [
    (200_001, "must be at most 200000"), (10**9, "must be at most 200000"),
    (0, "must be greater than 0"), (-5, "must be greater than 0"),
])
def test_max_event_bytes_cap(value: int, reason: str) -> None:
    assert_error(f"[limits]\nmax_event_bytes = {value}", "limits.max_event_bytes", reason)


def test_max_event_bytes_at_the_cap() -> None:
    assert loads("[limits]\nmax_event_bytes = 200000", env={}).max_event_bytes == 200_000


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found$"):
        load(missing)
    bad = tmp_path / "bad.toml"
    bad.write_text("[xmpp\nport = 1")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML: "):
        load(bad)
    latin = tmp_path / "latin.toml"
    latin.write_bytes("[bot]\nnick = 'caf\u00e9'".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.toml: not UTF-8 text"):
        load(latin)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[xmpp]\nport = 0\n")
    with pytest.raises(ConfigError) as info:
        load(wrong)
    assert (info.value.file, info.value.key) == (str(wrong), "xmpp.port")


def test_defaults_without_a_file() -> None:
    settings = load(None, env={})
    assert settings == Settings() and settings.source_file == "<defaults>"
    assert settings.xmpp.pubsub_service == "pubsub.localhost"
    assert loads("[xmpp]\ndomain = 'example.org'", env={}).xmpp.muc_service == \
        "conference.example.org"


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config.ENV_CONFIG, raising=False)
    assert config.find_config() is None
    (tmp_path / "var" / "server").mkdir(parents=True)
    (tmp_path / "var/server/backchannel.toml").write_text("")
    assert config.find_config() == Path("var/server/backchannel.toml")
    (tmp_path / "backchannel.toml").write_text("")
    assert config.find_config() == Path("backchannel.toml")
    monkeypatch.setenv(config.ENV_CONFIG, "/etc/bc.toml")
    assert config.find_config() == Path("/etc/bc.toml")
    assert config.find_config("given.toml") == Path("given.toml")


# ------------------------------------------------------------------------- secrets


def test_env_overrides_every_kind_of_secret() -> None:
    text = (ACCOUNT + SITE + "secret = 'file-secret'\n"
            "[sites.callback]\nurl = 'https://shop.example.com/cb'\n"
            "[services.crm]\nadapter = 'http'\nurl = 'https://crm.example/api'\n"
            "[services.geocode]\nprovider = 'opencage'\napi_key = 'file-key'\n")
    env = {
        "BACKCHANNEL_ACCOUNTS_WORKER_PASSWORD": "env-pw",
        "BACKCHANNEL_SITES_SHOP_SECRET": "env-secret",
        "BACKCHANNEL_SITES_SHOP_TOKEN": "env-token",
        "BACKCHANNEL_SITES_SHOP_CALLBACK_SECRET": "env-whsec",
        "BACKCHANNEL_SERVICES_CRM_AUTH_HEADER": "Bearer env",
        "BACKCHANNEL_SERVICES_GEOCODE_API_KEY": "env-key",
    }
    settings = loads(text, env=env)
    site = settings.sites[0]
    assert settings.account("worker").password.reveal() == "env-pw"  # env wins over file
    assert (site.secret.reveal(), site.token.reveal()) == ("env-secret", "env-token")
    assert site.callback is not None and site.callback.secret.reveal() == "env-whsec"
    crm = settings.service("crm").options
    assert isinstance(crm["auth_header"], Secret) and crm["auth_header"].reveal() == "Bearer env"
    assert "secret" not in crm and "token" not in crm  # only what the env or file gives
    assert settings.service("geocode").options["api_key"].reveal() == "env-key"
    # Without the environment, the file's values.
    plain = loads(text.replace("[sites.callback]\n", "[sites.callback]\nsecret = 'w'\n"), env={})
    assert plain.account("worker").password.reveal() == "pw-1"
    assert plain.sites[0].secret.reveal() == "file-secret" and not plain.sites[0].token
    assert plain.service("geocode").options["api_key"].reveal() == "file-key"


def test_env_name_rule() -> None:
    assert env_name("accounts.worker.password") == "BACKCHANNEL_ACCOUNTS_WORKER_PASSWORD"
    assert env_name("sites.shop-eu.callback.secret") == \
        "BACKCHANNEL_SITES_SHOP_EU_CALLBACK_SECRET"
    assert env_name("services.crm.auth_header") == "BACKCHANNEL_SERVICES_CRM_AUTH_HEADER"


@pytest.mark.security
def test_secret_never_prints() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert (repr(secret), str(secret), f"{secret}") == ("Secret('********')", "********",
                                                        "********")
    assert (repr(Secret("")), str(Secret(""))) == ("Secret('')", "")
    assert secret.reveal() == "hunter2" and secret == Secret("hunter2") and bool(secret)
    assert not Secret("")


@pytest.mark.security
def test_masked_settings_hold_no_secret() -> None:
    text = (ACCOUNT + SITE + "secret = 'site-s3cret'\ntoken = 'site-t0ken'\n"
            "[sites.callback]\nurl = 'https://shop.example.com/cb'\nsecret = 'cb-s3cret'\n"
            "[services.crm]\nadapter = 'http'\nurl = 'https://crm.example/api'\n"
            "auth_header = 'Bearer crm-t0ken'\nsecret = 'crm-s3cret'\n")
    settings = loads(text, env={})
    secrets = ["pw-1", "site-s3cret", "site-t0ken", "cb-s3cret", "crm-t0ken", "crm-s3cret"]
    for shown in (json.dumps(to_masked_dict(settings)), repr(settings), str(settings)):
        assert not [s for s in secrets if s in shown], shown
    masked = to_masked_dict(settings)
    assert masked["accounts"]["worker"] == {"jid": "worker@localhost", "password": "********"}
    assert masked["sites"][0]["token"] == "********"
    assert masked["services"]["crm"]["options"]["auth_header"] == "********"


# ------------------------------------------------------------------------- shipped configs


def example_env() -> dict[str, str]:
    """What the example leaves to the environment."""
    return {"BACKCHANNEL_SITES_SHOP_SECRET": "shop-signing-secret"}


def test_example_file_loads() -> None:
    settings = load(EXAMPLE, env=example_env())
    assert settings.source_file == str(EXAMPLE)
    assert settings.xmpp.loopback_plaintext is False  # a real deployment: TLS
    assert set(settings.accounts) == {"admin", "worker", "gateway", "bot", "site", "operator"}
    shop = settings.site_by_name("shop")
    assert shop is not None and shop.secret.reveal() == "shop-signing-secret"
    assert shop.callback is not None and shop.callback.protocol == "webhook"
    drupal = settings.site_by_name("drupal")
    assert drupal is not None and drupal.callback is not None
    assert drupal.callback.protocol == "xmlrpc"
    assert settings.service("geocode").options["provider"] == "offline"
    assert settings.service("crm").options["adapter"] == "local"
    assert settings.service("mailing_list").options["adapter"] == "local"
    assert settings.bot.roles["ops@example.com"] == "admin"
    assert settings.worker.routes == config.WorkerSettings().routes  # shows the defaults
    # It loads without the environment too (the shop then has no ingest secret).
    assert not load(EXAMPLE, env={}).site_by_name("shop").secret  # type: ignore[union-attr]


def _fields(cls: Any, seen: set[str]) -> set[str]:
    names: set[str] = set()
    for f in dataclasses.fields(cls):
        names.add(f.name)
        for candidate in (config.XmppSettings, config.NodeNames, config.Site,
                          config.CallbackSettings, config.ServiceSettings, config.Route,
                          config.WorkerSettings, config.BotSettings, config.GatewaySettings):
            if candidate.__name__ in str(f.type) and candidate.__name__ not in seen:
                seen.add(candidate.__name__)
                names |= _fields(candidate, seen)
    return names


def test_example_file_documents_every_setting() -> None:
    text = EXAMPLE.read_text()
    keys = _fields(Settings, set()) - {"source_file", "options", "name", "max_event_bytes"}
    keys |= {"name", "max_event_bytes", "limits", "provider", "user_agent", "adapter",
             "auth_header", "cache_ttl", "fields"}
    documented = r"^#?\s*{k}\s*=|^\[+([\w.]+\.)?{k}(\.[\w.]+)?\]+"
    missing = sorted(k for k in keys
                     if not re.search(documented.format(k=k), text, re.MULTILINE))
    assert not missing, f"backchannel.example.toml does not document: {missing}"
    # Every env override the docs promise follows the rule the code uses.
    for name in re.findall(r"BACKCHANNEL_[A-Z_]+", text):
        assert name.startswith("BACKCHANNEL_") and name == name.upper()
    for promised in ("BACKCHANNEL_ACCOUNTS_WORKER_PASSWORD", "BACKCHANNEL_SITES_SHOP_SECRET",
                     "BACKCHANNEL_SITES_SHOP_CALLBACK_SECRET",
                     "BACKCHANNEL_SERVICES_CRM_AUTH_HEADER"):
        assert promised in text


def test_example_commented_alternatives_are_valid() -> None:
    """Uncommenting the nominatim / http / xmlrpc examples still gives a valid config."""
    text = EXAMPLE.read_text()
    for block in ("provider = \"nominatim\"", "adapter = \"http\"", "adapter = \"xmlrpc\""):
        assert f"# {block}" in text
    geocode = re.sub(r"^provider = \"offline\"\n", "", text, flags=re.MULTILINE)
    geocode = re.sub(r"^cache_ttl = .*\n", "", geocode, flags=re.MULTILINE)
    for key in ("provider", "user_agent", "domain"):
        geocode = re.sub(rf"^# ({key} = )", r"\1", geocode, flags=re.MULTILINE)
    geocode = geocode.replace("rate_per_second = 0.0 ", "# ").replace("concurrency = 8 ", "# ")
    geocode = re.sub(r"^# (rate_per_second = 1\.0|concurrency = 1)$", r"\1", geocode,
                     flags=re.MULTILINE)
    options = loads(geocode, env=example_env()).service("geocode")
    assert options.options["provider"] == "nominatim" and options.rate_per_second == 1.0
    assert "ops@acme.example" in options.options["user_agent"]


def _state() -> ServerState:
    return ServerState(kind="prosody", domain="localhost", c2s_port=45222, http_port=45280,
                       component_port=45347, pid=None,
                       accounts={"admin": "a-pw", "worker": "w-pw", "operator": "o-pw",
                                 "site": "s-pw", "bot": "b-pw", "gateway": "g-pw"})


def test_generated_local_server_config_loads(tmp_path: Path) -> None:
    state = _state()
    path = tmp_path / "backchannel.toml"
    path.write_text(config_toml(state, var_dir=str(tmp_path / "var"), gateway_port=0,
                                extra=SITE))
    settings = load(path, env={})
    assert settings.xmpp.port == 45222 and settings.xmpp.loopback_plaintext
    assert settings.xmpp.pubsub_service == "pubsub.localhost"
    assert {n: a.password.reveal() for n, a in settings.accounts.items()} == state.accounts
    assert settings.bot.roles == {"operator@localhost": "admin"}
    assert settings.worker.store == f"{tmp_path}/var/worker.sqlite"
    assert settings.gateway.port == 0 and settings.sites[0].name == "shop"


def test_generated_config_of_the_real_server(server_state: ServerState,
                                             settings: Settings) -> None:
    """The session's managed server, as the conftest fixture loads it."""
    assert settings.xmpp.port == server_state.c2s_port
    assert settings.account("admin").bare == server_state.jid("admin")
