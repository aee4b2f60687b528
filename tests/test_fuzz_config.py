"""Fuzzing config loading (backchannel.config): any TOML text, any values, any env overrides.

Property: ``loads`` (and ``load`` on a file of any bytes) returns checked settings or
raises a :class:`~backchannel.errors.ConfigError` that names the file, is short, leaks no
internals and never shows a secret, from the file or from the environment. Loaded settings
never show a secret either (``to_masked_dict``, ``repr``).

Generated files mostly have the real shape (the known sections and keys, plausible and
implausible values of every TOML type, written as inline tables), so the checks behind
the parser are reached, not only its syntax errors.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel import config
from backchannel.errors import ConfigError
from tests.fuzz_support import MAX_MESSAGE, FuzzRun, fuzz_run, leaks

pytestmark = pytest.mark.fuzz

MARK = "SeCrEt"  # every generated secret contains this; it must never be shown
FILE = "fuzz.toml"
BARE_KEY = re.compile(r"\A[A-Za-z0-9_-]+\Z")

any_char = st.characters(codec=None, exclude_categories=())
text = st.text(max_size=30) | st.text(any_char, max_size=10)
numbers = (st.integers(-3, 70000) | st.integers() | st.integers(10**18, 10**400)
           | st.floats() | st.sampled_from([0, -1, 0.0, -0.0]))
dates = (st.datetimes(timezones=st.none() | st.timezones()) | st.dates() | st.times())
toml_scalars = st.booleans() | numbers | text | dates
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
plausible_strings = st.sampled_from([
    "", "127.0.0.1", "localhost", "::1", "example.com", "worker@localhost", "a@b/c",
    "bot@localhost/res", "x", "user.*", "geocode", "crm", "signups", "Signups", "http://x",
    "https://shop.example.com", "ftp://x", "http:// bad", "webhook", "xmlrpc", "open",
    "whitelist", "prosody", "ejabberd", "ignore", "deadletter", "viewer", "admin", "root",
    "a/b", "a b", "name\n", "back.channel.events", "offline", "nominatim",
])
secret_values = st.builds(lambda tail: f"{MARK}-{tail}", st.text(max_size=12))


def value_like(default: Any) -> st.SearchStrategy[Any]:
    """Values of the default's type, plausible or not, and now and then any TOML value."""
    if isinstance(default, bool):
        own: st.SearchStrategy[Any] = st.booleans()
    elif isinstance(default, int | float):
        own = numbers
    elif isinstance(default, str) or default is None:
        own = plausible_strings | text
    elif isinstance(default, tuple):
        own = st.lists(plausible_strings | text, max_size=3)
    else:
        own = toml_values
    return st.one_of(own, own, own, toml_values)


def defaults_of(cls: type) -> dict[str, Any]:
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = ""
    return out


@st.composite
def section(draw: st.DrawFn, cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A table with some of ``cls``'s keys (and now and then an unknown one)."""
    defaults = {k: v for k, v in defaults_of(cls).items() if k not in skip}
    keys = draw(st.lists(st.sampled_from(sorted(defaults)), max_size=4, unique=True))
    table = {k: draw(value_like(defaults[k])) for k in keys}
    if draw(st.integers(0, 9)) == 0:
        table[draw(text)] = draw(toml_values)
    return table


names = st.sampled_from(["shop", "blog", "worker", "bot", "Bad Name", "x" * 70, ""]) | text
secrets = secret_values | numbers | st.booleans()


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    parts = draw(st.lists(st.sampled_from(
        ["xmpp", "accounts", "nodes", "sites", "services", "worker", "bot", "gateway",
         "limits", "junk"]), max_size=6, unique=True))
    for part in parts:
        if part == "xmpp":
            doc["xmpp"] = draw(section(config.XmppSettings))
        elif part == "nodes":
            doc["nodes"] = draw(section(config.NodeNames))
        elif part == "gateway":
            doc["gateway"] = draw(section(config.GatewaySettings))
        elif part == "limits":
            doc["limits"] = {"max_event_bytes": draw(numbers)}
        elif part == "accounts":
            doc["accounts"] = {draw(names): {"jid": draw(plausible_strings | text),
                                             "password": draw(secrets)}
                               for _ in range(draw(st.integers(0, 3)))}
        elif part == "sites":
            sites = []
            for _ in range(draw(st.integers(0, 3))):
                site: dict[str, Any] = {"name": draw(names),
                                        "source": draw(plausible_strings | text)}
                for key in ("secret", "token"):
                    if draw(st.booleans()):
                        site[key] = draw(secrets)
                if draw(st.booleans()):
                    callback = draw(section(config.CallbackSettings, skip=("secret",)))
                    if draw(st.booleans()):
                        callback["secret"] = draw(secrets)
                    site["callback"] = callback
                if draw(st.booleans()):
                    site["xmpp_publishers"] = draw(value_like(()))
                sites.append(site)
            doc["sites"] = draw(st.sampled_from([sites, sites, {"x": 1}, "sites"]))
        elif part == "services":
            services = {}
            for _ in range(draw(st.integers(0, 3))):
                table = draw(section(config.ServiceSettings, skip=("name", "options")))
                for key in draw(st.lists(st.sampled_from(["api_key", "password", "token",
                                                          "provider", "adapter", "url"]),
                                         max_size=2, unique=True)):
                    table[key] = draw(secrets) if key in ("api_key", "password", "token") \
                        else draw(plausible_strings)
                services[draw(names)] = table
            doc["services"] = services
        elif part == "worker":
            worker = draw(section(config.WorkerSettings, skip=("routes",)))
            if draw(st.booleans()):
                worker["routes"] = draw(st.lists(
                    st.fixed_dictionaries({"pattern": plausible_strings | text},
                                          optional={"tasks": value_like(())}), max_size=3)
                    | toml_values)
            doc["worker"] = worker
        elif part == "bot":
            bot = draw(section(config.BotSettings, skip=("roles",)))
            if draw(st.booleans()):
                bot["roles"] = draw(st.dictionaries(plausible_strings | text,
                                                    plausible_strings | toml_values,
                                                    max_size=3))
            doc["bot"] = bot
        else:
            doc[draw(text)] = draw(toml_values)
    return doc


# ------------------------------------------------------------------------------ TOML writer


def toml_key(key: str) -> str:
    return key if BARE_KEY.match(key) else toml_string(key)


def toml_string(value: str) -> str:
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04X}")  # a surrogate escape is invalid TOML: a ConfigError
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**4000 else hex(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_text(doc: dict[str, Any]) -> str:
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in doc.items())


@st.composite
def hostile_text(draw: st.DrawFn) -> str:
    depth = draw(st.integers(1, 50_000))
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return "a = " + "[" * depth + "]" * depth
    if kind == 1:
        return "a = " + "{b = " * depth + "1" + "}" * depth
    if kind == 2:
        return f"[gateway]\nport = {'9' * draw(st.integers(4000, 6000))}\n"
    if kind == 3:
        return f"[xmpp]\nrequest_timeout = 1{'0' * draw(st.integers(300, 400))}\n"
    return "[" + ".".join(["t"] * min(depth, 5000)) + "]\n"


def env_for(doc: dict[str, Any]) -> st.SearchStrategy[dict[str, str]]:
    """Overrides for the secrets the document's accounts, sites and services could hold."""
    candidates = []
    for name in doc.get("accounts", {}) if isinstance(doc.get("accounts"), dict) else ():
        candidates.append(f"accounts.{name}.password")
    sites = doc.get("sites")
    for site in sites if isinstance(sites, list) else ():
        name = site.get("name")
        if isinstance(name, str):
            candidates += [f"sites.{name}.secret", f"sites.{name}.token",
                           f"sites.{name}.callback.secret"]
    services = doc.get("services")
    for name in services if isinstance(services, dict) else ():
        candidates += [f"services.{name}.api_key", f"services.{name}.password"]
    if not candidates:
        return st.just({})
    return st.dictionaries(st.sampled_from([config.env_name(c) for c in candidates]),
                           secret_values | st.just(""), max_size=3)


# ------------------------------------------------------------------------------ the property


def judge(run: FuzzRun, what: object, load: Any, file: str = FILE) -> None:
    with run.case(what):
        try:
            settings = load()
        except ConfigError as exc:
            message = str(exc)
            assert message.startswith(f"{file}: "), f"the file is not named: {message}"
            assert len(message) <= MAX_MESSAGE, f"message of {len(message)} characters"
            assert leaks(message) is None, message
            assert MARK not in message, f"a secret in an error: {message}"
            return
        shown = json.dumps(config.to_masked_dict(settings), default=str) + repr(settings)
        assert MARK not in shown, "a secret in the loaded settings' printout"


def test_fuzz_config(long_mode: bool, server_kind: str, tmp_path: Path) -> None:
    with fuzz_run("config", long_mode=long_mode, server_kind=server_kind,
                  ci_cases=500) as run:

        @run.hypothesis(0.7)
        @given(data=st.data())
        def shaped(data: st.DataObject) -> None:
            doc = data.draw(documents())
            env = data.draw(env_for(doc))
            text = toml_text(doc)
            judge(run, (text, env), lambda: config.loads(text, env=env, name=FILE))

        @run.hypothesis(0.2)
        @given(text=st.text(any_char, max_size=300) | hostile_text()
               | documents().map(toml_text).map(lambda t: t[: len(t) // 2]))
        def raw(text: str) -> None:
            judge(run, text, lambda: config.loads(text, env={}, name=FILE))

        counter = iter(range(10**9))

        @run.hypothesis(0.1)
        @given(body=st.binary(max_size=200) | documents().map(toml_text).map(
            lambda t: t.encode("utf-8", "surrogatepass")))
        def files(body: bytes) -> None:
            path = tmp_path / f"fuzz-{next(counter)}.toml"
            path.write_bytes(body)
            judge(run, body, lambda: config.load(path, env={}), file=str(path))
            path.unlink()

        shaped()
        raw()
        files()


@pytest.mark.parametrize("text, expected", [
    ("[xmpp]\nrequest_timeout = 1" + "0" * 400, "xmpp.request_timeout: is too large a number"),
    ("a = " + "[" * 100_000 + "]" * 100_000, "not valid TOML: arrays or tables nested too deeply"),
    ("a = " + "{b = " * 5000 + "1" + "}" * 5000, "nested too deeply"),
    ("[gateway]\nport = " + "9" * 5000, "not valid TOML: an integer has more than 4300 digits"),
    ("[gateway]\nport = " + "9" * 4000, "gateway.port: must be a TCP port (0-65535), got 9999"),
    ('[xmpp]\nserver_kind = "' + "x" * 5000 + '"', "got 'xxxxxxxx"),
])
def test_what_fuzzing_found_is_a_short_config_error(text: str, expected: str) -> None:
    """Each was an OverflowError, RecursionError, ValueError or a 5,000-character echo."""
    with pytest.raises(ConfigError) as info:
        config.loads(text, env={}, name=FILE)
    assert expected in str(info.value)
    assert len(str(info.value)) < 200
