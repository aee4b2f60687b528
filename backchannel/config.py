"""Typed settings, read once from a TOML file and validated at start-up.

Why one module: every component gets a frozen, already-checked :class:`Settings`; nothing
downstream handles raw dicts or wonders whether a key exists. An error names the file,
the dotted key and what is wrong (:class:`~backchannel.errors.ConfigError`).

Secrets can stay out of the file: every secret has an environment override named
``BACKCHANNEL_<PATH>`` in upper case with dots and dashes as underscores, e.g.
``BACKCHANNEL_ACCOUNTS_WORKER_PASSWORD`` or ``BACKCHANNEL_SITES_SHOP_SECRET``.
Secrets are :class:`Secret` values whose ``repr``/``str`` are masked, so they never reach a log.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from backchannel.errors import ConfigError
from backchannel.redact import remember

DEFAULT_CONFIG_NAMES = ("backchannel.toml", "var/server/backchannel.toml")
ENV_CONFIG = "BACKCHANNEL_CONFIG"


class Secret:
    """A string that does not print itself. Call :meth:`reveal` where the value is needed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if value:
            remember(value)  # libraries that log what they are handed: see backchannel.redact

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return "********" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def is_loopback_host(host: str) -> bool:
    """True for localhost names and loopback IP literals."""
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Account:
    """An XMPP account one component logs in with."""

    jid: str
    password: Secret

    @property
    def bare(self) -> str:
        return self.jid.split("/", 1)[0]


@dataclass(frozen=True)
class XmppSettings:
    """Where the XMPP server is and how to reach it.

    TLS with certificate checks is the default. ``loopback_plaintext`` turns TLS off and is
    accepted only when ``host`` is a loopback address (a local development server).
    """

    host: str = "127.0.0.1"
    port: int = 5222
    domain: str = "localhost"
    pubsub_service: str = "pubsub.localhost"
    muc_service: str = "conference.localhost"
    loopback_plaintext: bool = False
    direct_tls: bool = False
    ca_file: str | None = None
    server_kind: Literal["prosody", "ejabberd", "openfire", "other"] = "prosody"
    reconnect_max_delay: float = 30.0
    keepalive_interval: float = 60.0
    request_timeout: float = 15.0


@dataclass(frozen=True)
class NodeNames:
    """PubSub node names (dots, not slashes, so every server accepts them)."""

    events: str = "backchannel.events"
    results: str = "backchannel.results"
    deadletters: str = "backchannel.deadletters"
    feed_prefix: str = "backchannel.feeds."
    feeds: tuple[str, ...] = ("signups", "activity")
    max_items: int = 10000
    feed_access: Literal["open", "whitelist"] = "open"

    def feed(self, name: str) -> str:
        return f"{self.feed_prefix}{name}"

    def all(self) -> tuple[str, ...]:
        return (self.events, self.results, self.deadletters, *(self.feed(f) for f in self.feeds))


@dataclass(frozen=True)
class CallbackSettings:
    """Where and how a site wants results: its registered endpoint, nowhere else."""

    url: str
    protocol: Literal["xmlrpc", "webhook"] = "webhook"
    method: str = "backchannel.result"
    secret: Secret = field(default_factory=lambda: Secret(""))
    allow_private: bool = False
    timeout: float = 15.0
    max_attempts: int = 8
    max_response_bytes: int = 65536


@dataclass(frozen=True)
class Site:
    """A registered site: its identity (`source`), ingest credentials and callback."""

    name: str
    source: str
    secret: Secret = field(default_factory=lambda: Secret(""))
    token: Secret = field(default_factory=lambda: Secret(""))
    callback: CallbackSettings | None = None
    xmpp_publishers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and retry policy of one outside service (one per task kind).

    ``options`` holds the task plug-in's own settings (provider, adapter, URL...); the
    plug-in validates them when it is built, naming the key ``services.<name>.<option>``.
    """

    name: str
    concurrency: int = 8
    rate_per_second: float = 0.0  # 0 = unlimited
    timeout: float = 10.0
    # Sized to ride out an outage of about ten minutes (1 + 2 + ... + 256 s of backoff
    # once the breaker says the service is down) before a task becomes a dead letter;
    # when the service answers again, waiting tasks run at once (workers.lanes).
    max_attempts: int = 10
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    breaker_threshold: int = 5
    breaker_reset: float = 10.0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """Events whose type matches ``pattern`` (a glob) run ``tasks``."""

    pattern: str
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class WorkerSettings:
    store: str = "var/worker.sqlite"
    unknown_types: Literal["ignore", "deadletter"] = "deadletter"
    feed_personal_data: bool = False
    callback_concurrency: int = 16
    callback_time_scale: float = 1.0  # < 1 compresses the callback retry schedule (tests, demo)
    retention_days: float = 7.0  # finished events (and their traces) kept this long; 0 = forever
    routes: tuple[Route, ...] = (
        Route("user.registered", ("geocode", "crm", "mailing_list")),
        Route("user.profile_changed", ("geocode", "crm")),
        Route("user.logged_in", ()),  # recorded and shown in the activity feed only
    )


@dataclass(frozen=True)
class BotSettings:
    nick: str = "backchannel"
    prefix: str = "!"
    rooms: tuple[str, ...] = ()
    roles: Mapping[str, Literal["viewer", "operator", "admin"]] = field(default_factory=dict)
    rate_limit_per_minute: int = 30
    relay_interval: float = 3.0
    state: str = "var/bot.sqlite"


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_batch: int = 100
    timestamp_tolerance: float = 300.0


@dataclass(frozen=True)
class Settings:
    """Everything backchannel needs, validated."""

    xmpp: XmppSettings = field(default_factory=XmppSettings)
    accounts: Mapping[str, Account] = field(default_factory=dict)
    nodes: NodeNames = field(default_factory=NodeNames)
    sites: tuple[Site, ...] = ()
    services: Mapping[str, ServiceSettings] = field(default_factory=dict)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    bot: BotSettings = field(default_factory=BotSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    max_event_bytes: int = 65536
    source_file: str = "<defaults>"

    def account(self, name: str) -> Account:
        try:
            return self.accounts[name]
        except KeyError:
            raise ConfigError(
                f"no account '{name}' configured (add [accounts.{name}] with jid and password)",
                file=self.source_file,
                key=f"accounts.{name}",
            ) from None

    def site_by_source(self, source: str) -> Site | None:
        for site in self.sites:
            if site.source == source:
                return site
        return None

    def site_by_name(self, name: str) -> Site | None:
        for site in self.sites:
            if site.name == name:
                return site
        return None

    def service(self, name: str) -> ServiceSettings:
        return self.services.get(name) or ServiceSettings(name=name)


# --------------------------------------------------------------------------- loading


def find_config(explicit: str | None = None) -> Path | None:
    """The config file: ``explicit``, $BACKCHANNEL_CONFIG, ./backchannel.toml, then the managed
    server's generated ``var/server/backchannel.toml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    for name in DEFAULT_CONFIG_NAMES:
        if Path(name).is_file():
            return Path(name)
    return None


def load(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a config file. ``None`` gives the built-in defaults."""
    environ = os.environ if env is None else env
    if path is None:
        return _Parser("<defaults>", environ).settings({})
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(p)) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", file=str(p)) from None
    return _Parser(str(p), environ).settings(_parse_toml(text, str(p)))


def loads(text: str, env: Mapping[str, str] | None = None, name: str = "<string>") -> Settings:
    """Like :func:`load` from a string (tests, generated configs)."""
    return _Parser(name, os.environ if env is None else env).settings(_parse_toml(text, name))


def _parse_toml(text: str, name: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=name) from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError("not valid TOML: arrays or tables nested too deeply",
                          file=name) from None
    except ValueError:  # an integer longer than Python converts (sys.int_info)
        raise ConfigError("not valid TOML: an integer has more than "
                          f"{sys.get_int_max_str_digits()} digits", file=name) from None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(value: Any) -> str:
    """A value from the file, quoted for an error message and clipped to a sensible length."""
    return _clip(repr(value), 60)


_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}\Z")  # \Z: "$" would let a final newline in
_NAME_RULE = "1-63 lower-case letters, digits, '_' or '-', starting with a letter"
_JID = re.compile(r"[^@/\s]+@[^@/\s]+(/[^\s]+)?")
_SECRET_OPTIONS = ("api_key", "password", "secret", "token", "auth_header")


def env_name(key: str) -> str:
    """The environment variable that overrides the secret at dotted ``key``."""
    return "BACKCHANNEL_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


class _Parser:
    """Turns the raw TOML tree into :class:`Settings`, naming file and key on any error."""

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, key=_clip(key, 120))

    # -- typed getters ---------------------------------------------------------------
    def table(self, raw: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a table, got {type(value).__name__}")
        return value

    def check_keys(self, raw: Mapping[str, Any], allowed: set[str], path: str) -> None:
        for key in raw:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                raise self.fail(f"{path}.{key}" if path else key, f"unknown key (known: {hint})")

    def get(self, raw: Mapping[str, Any], key: str, path: str, kind: type, default: Any) -> Any:
        if key not in raw:
            return default
        value = raw[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise self.fail(f"{path}.{key}", "is too large a number") from None
        if kind is int and isinstance(value, bool):
            raise self.fail(f"{path}.{key}", "must be an integer, got a boolean")
        if not isinstance(value, kind):
            raise self.fail(
                f"{path}.{key}", f"must be {kind.__name__}, got {type(value).__name__}"
            )
        return value

    def positive(
        self, raw: Mapping[str, Any], key: str, path: str, kind: type, default: Any
    ) -> Any:
        value = self.get(raw, key, path, kind, default)
        self.finite(value, f"{path}.{key}")
        if value <= 0:
            raise self.fail(f"{path}.{key}", f"must be greater than 0, got {_shown(value)}")
        return value

    def non_negative(
        self, raw: Mapping[str, Any], key: str, path: str, kind: type, default: Any
    ) -> Any:
        value = self.get(raw, key, path, kind, default)
        self.finite(value, f"{path}.{key}")
        if value < 0:
            raise self.fail(f"{path}.{key}", f"must not be negative, got {_shown(value)}")
        return value

    def finite(self, value: Any, key: str) -> None:
        # TOML has nan and inf; "nan <= 0" is False, so without this a nan timeout passes.
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value}")

    def choice(
        self, raw: Mapping[str, Any], key: str, path: str, choices: tuple[str, ...], default: str
    ) -> str:
        value = self.get(raw, key, path, str, default)
        if value not in choices:
            raise self.fail(f"{path}.{key}",
                            f"must be one of {', '.join(choices)}; got {_shown(value)}")
        return str(value)

    def strings(
        self, raw: Mapping[str, Any], key: str, path: str, default: tuple[str, ...]
    ) -> tuple[str, ...]:
        value = raw.get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{path}.{key}", "must be a list of strings")
        return tuple(value)

    def secret(self, raw: Mapping[str, Any], key: str, path: str) -> Secret:
        name = env_name(f"{path}.{key}")
        if name in self.env:
            return Secret(self.env[name])
        return Secret(self.get(raw, key, path, str, ""))

    # -- sections --------------------------------------------------------------------
    def settings(self, raw: Mapping[str, Any]) -> Settings:
        self.check_keys(
            raw,
            {"xmpp", "accounts", "nodes", "sites", "services", "worker", "bot", "gateway",
             "limits"},
            "",
        )
        limits = self.table(raw, "limits", "limits")
        self.check_keys(limits, {"max_event_bytes"}, "limits")
        max_event_bytes = self.positive(limits, "max_event_bytes", "limits", int, 65536)
        if max_event_bytes > 200_000:
            raise self.fail(
                "limits.max_event_bytes",
                "must be at most 200000 (XMPP servers cap stanzas near 250 KB)",
            )
        return Settings(
            xmpp=self.xmpp(self.table(raw, "xmpp", "xmpp")),
            accounts=self.accounts(self.table(raw, "accounts", "accounts")),
            nodes=self.nodes(self.table(raw, "nodes", "nodes")),
            sites=self.sites(raw.get("sites", [])),
            services=self.services(self.table(raw, "services", "services")),
            worker=self.worker(self.table(raw, "worker", "worker")),
            bot=self.bot(self.table(raw, "bot", "bot")),
            gateway=self.gateway(self.table(raw, "gateway", "gateway")),
            max_event_bytes=max_event_bytes,
            source_file=self.file,
        )

    def xmpp(self, raw: Mapping[str, Any]) -> XmppSettings:
        p = "xmpp"
        self.check_keys(raw, {f.name for f in fields(XmppSettings)}, p)
        d = XmppSettings()
        host = self.get(raw, "host", p, str, d.host)
        port = self.get(raw, "port", p, int, d.port)
        if not 0 < port < 65536:
            raise self.fail(f"{p}.port", f"must be a TCP port (1-65535), got {_shown(port)}")
        plaintext = self.get(raw, "loopback_plaintext", p, bool, d.loopback_plaintext)
        if plaintext and not is_loopback_host(host):
            raise self.fail(
                f"{p}.loopback_plaintext",
                f"plaintext is only allowed to a loopback server, and host is {_shown(host)}; "
                "use TLS for anything else",
            )
        direct_tls = self.get(raw, "direct_tls", p, bool, d.direct_tls)
        if plaintext and direct_tls:
            raise self.fail(f"{p}.direct_tls", "contradicts loopback_plaintext = true; choose one")
        domain = self.get(raw, "domain", p, str, d.domain)
        return XmppSettings(
            host=host,
            port=port,
            domain=domain,
            pubsub_service=self.get(raw, "pubsub_service", p, str, f"pubsub.{domain}"),
            muc_service=self.get(raw, "muc_service", p, str, f"conference.{domain}"),
            loopback_plaintext=plaintext,
            direct_tls=direct_tls,
            ca_file=self.get(raw, "ca_file", p, str, None),
            server_kind=self.choice(  # type: ignore[arg-type]
                raw, "server_kind", p, ("prosody", "ejabberd", "openfire", "other"), d.server_kind
            ),
            reconnect_max_delay=self.positive(
                raw, "reconnect_max_delay", p, float, d.reconnect_max_delay
            ),
            keepalive_interval=self.positive(
                raw, "keepalive_interval", p, float, d.keepalive_interval
            ),
            request_timeout=self.positive(raw, "request_timeout", p, float, d.request_timeout),
        )

    def accounts(self, raw: Mapping[str, Any]) -> dict[str, Account]:
        out: dict[str, Account] = {}
        for name, value in raw.items():
            p = f"accounts.{name}"
            if not isinstance(value, Mapping):
                raise self.fail(p, "must be a table with jid and password")
            self.check_keys(value, {"jid", "password"}, p)
            jid = self.get(value, "jid", p, str, "")
            if not _JID.fullmatch(jid):
                raise self.fail(f"{p}.jid", f"must be a JID like name@domain, got {_shown(jid)}")
            password = self.secret(value, "password", p)
            if not password:
                raise self.fail(f"{p}.password",
                                f"missing (set it here or in ${env_name(p + '.password')})")
            out[name] = Account(jid=jid, password=password)
        return out

    def nodes(self, raw: Mapping[str, Any]) -> NodeNames:
        p = "nodes"
        self.check_keys(raw, {f.name for f in fields(NodeNames)}, p)
        d = NodeNames()
        names = {}
        for key in ("events", "results", "deadletters", "feed_prefix"):
            value = self.get(raw, key, p, str, getattr(d, key))
            if "/" in value or not value or any(c.isspace() for c in value):
                raise self.fail(f"{p}.{key}", "must be non-empty, without slashes or spaces")
            names[key] = value
        feeds = self.strings(raw, "feeds", p, d.feeds)
        for feed in feeds:
            if not _NAME.match(feed):
                raise self.fail(f"{p}.feeds", f"feed name {_shown(feed)} must be {_NAME_RULE}")
        return NodeNames(
            feeds=feeds,
            max_items=self.positive(raw, "max_items", p, int, d.max_items),
            feed_access=self.choice(  # type: ignore[arg-type]
                raw, "feed_access", p, ("open", "whitelist"), d.feed_access
            ),
            **names,
        )

    def sites(self, raw: Any) -> tuple[Site, ...]:
        if not isinstance(raw, list):
            raise self.fail("sites", "must be an array of tables ([[sites]])")
        out: list[Site] = []
        seen: set[str] = set()
        for i, item in enumerate(raw):
            p = f"sites[{i}]"
            if not isinstance(item, Mapping):
                raise self.fail(p, "must be a table")
            self.check_keys(item, {"name", "source", "secret", "token", "callback",
                                   "xmpp_publishers"}, p)
            name = self.get(item, "name", p, str, "")
            if not _NAME.match(name):
                raise self.fail(f"{p}.name", f"must be {_NAME_RULE}, got {_shown(name)}")
            source = self.get(item, "source", p, str, "")
            if not source:
                raise self.fail(f"{p}.source", "missing (the URI the site puts in `source`)")
            if name in seen or source in seen:
                raise self.fail(p, f"site {name!r} / source {_shown(source)} is declared twice")
            seen.update((name, source))
            sp = f"sites.{name}"
            callback = None
            if "callback" in item:
                callback = self.callback(self.table(item, "callback", p), f"{p}.callback", sp)
            out.append(
                Site(
                    name=name,
                    source=source,
                    secret=self.secret(item, "secret", sp),
                    token=self.secret(item, "token", sp),
                    callback=callback,
                    xmpp_publishers=self.strings(item, "xmpp_publishers", p, ()),
                )
            )
        return tuple(out)

    def callback(self, raw: Mapping[str, Any], p: str, secret_path: str) -> CallbackSettings:
        self.check_keys(raw, {f.name for f in fields(CallbackSettings)}, p)
        url = self.get(raw, "url", p, str, "")
        if not re.match(r"^https?://[^/\s]+", url):
            raise self.fail(f"{p}.url", f"must be an http(s) URL, got {_shown(url)}")
        d = CallbackSettings(url=url)
        protocol = self.choice(raw, "protocol", p, ("xmlrpc", "webhook"), d.protocol)
        secret = self.secret(raw, "secret", f"{secret_path}.callback")
        if protocol == "webhook" and not secret:
            raise self.fail(f"{p}.secret", "a webhook callback needs a signing secret")
        return CallbackSettings(
            url=url,
            protocol=protocol,  # type: ignore[arg-type]
            method=self.get(raw, "method", p, str, d.method),
            secret=secret,
            allow_private=self.get(raw, "allow_private", p, bool, d.allow_private),
            timeout=self.positive(raw, "timeout", p, float, d.timeout),
            max_attempts=self.positive(raw, "max_attempts", p, int, d.max_attempts),
            max_response_bytes=self.positive(
                raw, "max_response_bytes", p, int, d.max_response_bytes
            ),
        )

    def services(self, raw: Mapping[str, Any]) -> dict[str, ServiceSettings]:
        out: dict[str, ServiceSettings] = {}
        known = {f.name for f in fields(ServiceSettings)} - {"name", "options"}
        for name, value in raw.items():
            p = f"services.{name}"
            if not isinstance(value, Mapping):
                raise self.fail(p, "must be a table")
            d = ServiceSettings(name=name)
            options = {k: v for k, v in value.items() if k not in known}
            # Secrets inside plug-in options may come from the environment too, also when
            # the file leaves them out (that is the point of keeping them out of it).
            for key in _SECRET_OPTIONS:
                if key in options or env_name(f"{p}.{key}") in self.env:
                    options[key] = self.secret(value, key, p)
            out[name] = ServiceSettings(
                name=name,
                concurrency=self.positive(value, "concurrency", p, int, d.concurrency),
                rate_per_second=self.non_negative(
                    value, "rate_per_second", p, float, d.rate_per_second
                ),
                timeout=self.positive(value, "timeout", p, float, d.timeout),
                max_attempts=self.positive(value, "max_attempts", p, int, d.max_attempts),
                backoff_initial=self.positive(value, "backoff_initial", p, float,
                                              d.backoff_initial),
                backoff_max=self.positive(value, "backoff_max", p, float, d.backoff_max),
                breaker_threshold=self.positive(
                    value, "breaker_threshold", p, int, d.breaker_threshold
                ),
                breaker_reset=self.positive(value, "breaker_reset", p, float, d.breaker_reset),
                options=options,
            )
        return out

    def worker(self, raw: Mapping[str, Any]) -> WorkerSettings:
        p = "worker"
        self.check_keys(raw, {f.name for f in fields(WorkerSettings)}, p)
        d = WorkerSettings()
        routes = d.routes
        if "routes" in raw:
            rr = raw["routes"]
            if not isinstance(rr, list):
                raise self.fail(f"{p}.routes", "must be an array of tables ([[worker.routes]])")
            parsed: list[Route] = []
            for i, r in enumerate(rr):
                rp = f"{p}.routes[{i}]"
                if not isinstance(r, Mapping):
                    raise self.fail(rp, "must be a table with pattern and tasks")
                self.check_keys(r, {"pattern", "tasks"}, rp)
                pattern = self.get(r, "pattern", rp, str, "")
                if not pattern:
                    raise self.fail(f"{rp}.pattern", "missing (a glob such as 'user.*')")
                if "tasks" not in r:  # a forgotten key would silently route to nothing
                    raise self.fail(f"{rp}.tasks",
                                    "missing (a list of task names; [] to accept and do nothing)")
                tasks = self.strings(r, "tasks", rp, ())
                for task in tasks:
                    if not _NAME.match(task):
                        raise self.fail(f"{rp}.tasks",
                                        f"task name {_shown(task)} must be {_NAME_RULE}")
                parsed.append(Route(pattern, tasks))
            routes = tuple(parsed)
        return WorkerSettings(
            store=self.get(raw, "store", p, str, d.store),
            unknown_types=self.choice(  # type: ignore[arg-type]
                raw, "unknown_types", p, ("ignore", "deadletter"), d.unknown_types
            ),
            feed_personal_data=self.get(raw, "feed_personal_data", p, bool,
                                        d.feed_personal_data),
            callback_concurrency=self.positive(raw, "callback_concurrency", p, int,
                                               d.callback_concurrency),
            callback_time_scale=self.positive(raw, "callback_time_scale", p, float,
                                              d.callback_time_scale),
            retention_days=self.non_negative(raw, "retention_days", p, float,
                                             d.retention_days),
            routes=routes,
        )

    def bot(self, raw: Mapping[str, Any]) -> BotSettings:
        p = "bot"
        self.check_keys(raw, {f.name for f in fields(BotSettings)}, p)
        d = BotSettings()
        roles_raw = self.table(raw, "roles", f"{p}.roles")
        roles: dict[str, Literal["viewer", "operator", "admin"]] = {}
        for jid, role in roles_raw.items():
            if "/" in jid or not _JID.fullmatch(jid):
                raise self.fail(f"{p}.roles.{jid}", "must be a bare JID (name@domain)")
            if role not in ("viewer", "operator", "admin"):
                raise self.fail(f"{p}.roles.{jid}",
                                f"role must be viewer, operator or admin, got {_shown(role)}")
            roles[jid.lower()] = role
        return BotSettings(
            nick=self.get(raw, "nick", p, str, d.nick),
            prefix=self.get(raw, "prefix", p, str, d.prefix),
            rooms=self.strings(raw, "rooms", p, d.rooms),
            roles=roles,
            rate_limit_per_minute=self.positive(
                raw, "rate_limit_per_minute", p, int, d.rate_limit_per_minute
            ),
            relay_interval=self.positive(raw, "relay_interval", p, float, d.relay_interval),
            state=self.get(raw, "state", p, str, d.state),
        )

    def gateway(self, raw: Mapping[str, Any]) -> GatewaySettings:
        p = "gateway"
        self.check_keys(raw, {f.name for f in fields(GatewaySettings)}, p)
        d = GatewaySettings()
        port = self.get(raw, "port", p, int, d.port)
        if not 0 <= port < 65536:
            raise self.fail(f"{p}.port", f"must be a TCP port (0-65535), got {_shown(port)}")
        return GatewaySettings(
            host=self.get(raw, "host", p, str, d.host),
            port=port,
            max_batch=self.positive(raw, "max_batch", p, int, d.max_batch),
            timestamp_tolerance=self.positive(
                raw, "timestamp_tolerance", p, float, d.timestamp_tolerance
            ),
        )


# --------------------------------------------------------------------------- printing


def to_masked_dict(obj: Any) -> Any:
    """The effective settings as plain data with every secret masked (``config check``)."""
    if isinstance(obj, Secret):
        return str(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_masked_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_masked_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [to_masked_dict(v) for v in obj]
    return obj
