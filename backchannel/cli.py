"""The ``backchannel`` command line.

Bad input exits with status 2 and one line naming the problem; a failure of the system
(server unreachable, refused) exits with 1 and says what to check. Subcommands:

    config check           validate the config and print it with secrets masked
    server start|stop|status|adduser   the managed local XMPP server
    nodes bootstrap        create/verify the PubSub nodes
    publish TYPE ...       publish one event (returns once the server stored it)
    tail NODE              print a node's items live
    run                    run the components (worker, gateway, bot) in one process
    demo [--check]         everything on one machine, with simulated sites
    simulate               fake sites publishing events
    bench                  the benchmark suite
    <operator command>     e.g. `backchannel status`: runs it against a running bot
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import json
import logging
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from backchannel import __version__, config, redact
from backchannel.errors import (
    BackchannelError,
    ConfigError,
    EventError,
    ServerError,
    UsageExit,
)

log = logging.getLogger("backchannel")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

EXAMPLES = """\
examples:
  backchannel server start                 a local Prosody, and var/server/backchannel.toml
  backchannel config check                 validate the config, print it with secrets masked
  backchannel nodes bootstrap              create or verify the PubSub nodes
  backchannel tail events                  watch events arrive (Ctrl-C to stop)
  backchannel publish user.registered --source https://shop.example.com \\
      --data '{"user_id": "42", "address": "Toluca Lake, CA"}'

Bad input exits with status 2, a failure of the system with 1.
Run `backchannel COMMAND --help` for the options of a command."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageExit(f"{self.prog}: {message} (see --help)")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE",
                   help="config file (default: $BACKCHANNEL_CONFIG, ./backchannel.toml, "
                        "or the managed server's var/server/backchannel.toml)")


def build_parser() -> Parser:
    parser = Parser(prog="backchannel",
                    description="backchannel takes slow back-end work (geocoding, CRM and "
                                "mailing-list sync, callbacks) off web sites, over XMPP "
                                "PubSub.",
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"backchannel {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv for XMPP traffic details)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("config", help="validate and show the configuration",
                       description="Validate the config file and print the effective "
                                   "settings, secrets masked. Exit 2 naming file and key "
                                   "if anything is wrong.")
    p.add_argument("action", choices=["check"], help="check: validate, print masked settings")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("server", help="the managed local XMPP server (Prosody by default)",
                       description="Run a local XMPP server for development and tests from a "
                                   "generated config in one folder. `start` also writes "
                                   "DIR/backchannel.toml with an account per component.")
    p.add_argument("action", choices=["start", "stop", "status", "adduser"],
                   help="start (idempotent), stop, status (exit 1 unless running), "
                        "adduser NAME (create or reset an account)")
    p.add_argument("name", nargs="?", help="account name for adduser")
    p.add_argument("--dir", default="var/server", help="server folder (default: var/server)")
    p.add_argument("--kind", default="prosody", choices=["prosody", "ejabberd"])
    p.add_argument("--password", help="password for adduser (default: generated)")
    p.add_argument("--gateway-port", type=int, default=8080,
                   help="gateway port written into the generated config (default 8080)")

    p = sub.add_parser("nodes", help="create or verify the PubSub nodes",
                       description="Create or verify the PubSub nodes with an explicit "
                                   "configuration and grant publishers (idempotent); report "
                                   "what the server accepted, ignored or refused.")
    p.add_argument("action", choices=["bootstrap"], help="bootstrap: create or verify")
    _add_config(p)

    p = sub.add_parser("publish", help="publish one event and wait until the server stored it",
                       description="Publish one CloudEvent and print its id once the server "
                                   "has stored it.",
                       epilog="example: backchannel publish user.registered --source "
                              "https://shop.example.com --data '{\"user_id\": \"42\"}'")
    p.add_argument("type", help="event type, e.g. user.registered")
    p.add_argument("--source", required=True, help="the registered site's source URI")
    p.add_argument("--data", default="{}",
                   help="JSON data, or @FILE to read it from a file (default: {})")
    p.add_argument("--id", help="event id (default: a new ULID)")
    p.add_argument("--node", default="events", help="node or short name (default: events)")
    p.add_argument("--account", default="site", help="account to publish as (default: site)")
    _add_config(p)

    p = sub.add_parser("tail", help="print a node's items live (Ctrl-C to stop)",
                       description="Print the last retained items of a node, then new items "
                                   "as they are published, until Ctrl-C (or --count).")
    p.add_argument("node", help="node name, or events|results|deadletters|<feed name>")
    p.add_argument("--json", action="store_true", help="one JSON document per line")
    p.add_argument("--last", type=int, default=10,
                   help="retained items to show first (default 10)")
    p.add_argument("--account", default="operator", help="account (default: operator)")
    p.add_argument("--count", type=int, default=0, help="exit after N live items (0: never)")
    _add_config(p)

    p = sub.add_parser("run", help="run components in one process",
                       description="Run the worker, the HTTP gateway and the chat bot in one "
                                   "process until SIGINT/SIGTERM.")
    p.add_argument("--components", default="worker,gateway,bot",
                   help="comma-separated: worker, gateway, bot (default: all)")
    _add_config(p)

    from backchannel.cli_extra import add_extra_commands
    add_extra_commands(sub)
    return parser


def short_node(settings: config.Settings, name: str) -> str:
    nodes = settings.nodes
    if name in ("events", "results", "deadletters"):
        return str(getattr(nodes, name))
    if name in nodes.feeds:
        return nodes.feed(name)
    return name


def load_settings(path: str | None) -> config.Settings:
    found = config.find_config(path)
    if found is None:
        raise ConfigError(
            "no config file found: pass -c FILE, set $BACKCHANNEL_CONFIG, create "
            "./backchannel.toml (see backchannel.example.toml), or run "
            "`backchannel server start` to generate one for a local server"
        )
    return config.load(found)


# ---------------------------------------------------------------------------- commands


def cmd_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    data = config.to_masked_dict(settings)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"# {settings.source_file}: OK")
        _print_tree(data)
    return EXIT_OK


def _print_tree(data: Any, indent: str = "") -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, dict | list) and value:
                print(f"{indent}{key}:")
                _print_tree(value, indent + "  ")
            else:
                print(f"{indent}{key}: {json.dumps(value)}")
    elif isinstance(data, list):
        for value in data:
            if isinstance(value, dict):
                print(f"{indent}-")
                _print_tree(value, indent + "  ")
            else:
                print(f"{indent}- {json.dumps(value)}")


def cmd_server(args: argparse.Namespace) -> int:
    from backchannel.localserver import config_toml, managed_server

    server = managed_server(args.kind, args.dir)
    if args.action == "start":
        state = server.start()
        cfg = Path(args.dir) / "backchannel.toml"
        if not cfg.exists():
            site = (
                "\n# An example site, so `backchannel publish --source https://shop.example.com`"
                "\n# works at once. Add a [sites.callback] to have results called back.\n"
                "[[sites]]\nname = \"shop\"\nsource = \"https://shop.example.com\"\n"
                f"secret = \"{secrets.token_urlsafe(24)}\"\n"
                f"xmpp_publishers = [\"{state.jid('site')}\"]\n")
            cfg.write_text(config_toml(state, var_dir=str(Path(args.dir).parent),
                                       gateway_port=args.gateway_port, extra=site))
            cfg.chmod(0o600)
        print(f"{state.kind} running on 127.0.0.1:{state.c2s_port} (pid {state.pid}), "
              f"domain {state.domain}, http {state.http_port}")
        print(f"config for backchannel: {cfg}")
        print(f"operator login: {state.jid('operator')} / {state.accounts['operator']}")
    elif args.action == "stop":
        print("stopped" if server.stop() else "not running")
    elif args.action == "status":
        running, current = server.status()
        if current is None:
            print(f"backchannel server status: no managed server in {args.dir} "
                  "(start one with `backchannel server start --dir DIR`)", file=sys.stderr)
            return EXIT_FAILURE
        print(f"{current.kind} {'running' if running else 'stopped'}: "
              f"127.0.0.1:{current.c2s_port} pid {current.pid} "
              f"accounts {', '.join(sorted(current.accounts))}")
        return EXIT_OK if running else EXIT_FAILURE
    elif args.action == "adduser":
        if not args.name:
            raise UsageExit("backchannel server adduser: give an account name")
        password = server.adduser(args.name, args.password)
        added = server.load_state()
        print(f"{args.name}@{added.domain if added else 'localhost'} / {password}")
    return EXIT_OK


def cmd_nodes(args: argparse.Namespace) -> int:
    from backchannel.xmpp_tools import bootstrap_nodes

    settings = load_settings(args.config)
    reports = asyncio.run(bootstrap_nodes(settings))
    for report in reports:
        print("\n".join(report.lines()))
    return EXIT_FAILURE if any(r.action == "failed" for r in reports) else EXIT_OK


def read_data(value: str) -> Any:
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageExit(f"backchannel publish: cannot read {value[1:]}: {exc.strerror}") \
                from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageExit(f"backchannel publish: --data is not JSON: {exc.msg} at column "
                        f"{exc.colno}") from None


def cmd_publish(args: argparse.Namespace) -> int:
    from pubsub.envelope import make_event

    data = read_data(args.data)  # the command line first: its mistakes are the likelier ones
    try:
        event = make_event(args.type, args.source, data, id=args.id)
    except EventError as exc:
        raise UsageExit(f"backchannel publish: {exc}") from None
    settings = load_settings(args.config)
    if len(event.to_json().encode()) > settings.max_event_bytes:
        raise UsageExit(f"backchannel publish: event is larger than "
                        f"{settings.max_event_bytes} bytes")
    node = short_node(settings, args.node)
    from backchannel.xmpp_tools import publish_one  # slixmpp: only once the input is good

    asyncio.run(publish_one(settings, args.account, node, event))
    print(event.id)
    return EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    if args.last < 0 or args.count < 0:
        raise UsageExit("backchannel tail: --last and --count must not be negative")
    settings = load_settings(args.config)
    from backchannel.xmpp_tools import tail

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(settings, args.account, short_node(settings, args.node),
                         as_json=args.json, last=args.last, count=args.count))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from backchannel.app import run_components

    settings = load_settings(args.config)
    wanted = [c.strip() for c in args.components.split(",") if c.strip()]
    bad = [c for c in wanted if c not in ("worker", "gateway", "bot")]
    if bad or not wanted:
        raise UsageExit(f"backchannel run: unknown component(s) {', '.join(bad) or '(none)'}; "
                        "choose from worker, gateway, bot")
    return run_components(settings, wanted)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "config": cmd_config, "server": cmd_server, "nodes": cmd_nodes, "publish": cmd_publish,
    "tail": cmd_tail, "run": cmd_run,
}


def check_operator_word(word: str, parser: Parser) -> None:
    """A typo is a usage error here, before any config is read or the bot is asked."""
    try:
        from commands.builtin import builtin_registry
    except ImportError:  # no command set installed: the operator door decides
        return
    registry = builtin_registry()
    heads = {c.words[0].casefold() for c in registry}
    if word.casefold() in heads or registry.resolve([word]) or registry.group(word):
        return
    choices = sorted(set(HANDLERS) | heads)
    near = difflib.get_close_matches(word, choices, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise UsageExit(f"backchannel: unknown command {word!r} ({hint}see backchannel --help)")


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 \
        else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stderr)
    redact.install(logging.getLogger().handlers)  # no secret in any line, whoever logs it
    if verbosity < 2:
        # Our connection layer turns slixmpp's failures into one clear error; its own
        # log lines would be a second, rawer report of the same thing (-v shows them).
        logging.getLogger("slixmpp").setLevel(logging.WARNING if verbosity else
                                              logging.CRITICAL)


def _command_word(argv: Sequence[str]) -> str | None:
    """The first word that is not an option (``-c FILE`` takes its value along)."""
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token in ("-c", "--config"):
            skip = True
            continue
        if token.startswith("-"):
            if token in ("-h", "--help", "--version"):
                return None
            continue
        return token
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from backchannel.cli_extra import OPERATOR_FALLBACK, run_operator_command

    parser = build_parser()
    try:
        word = _command_word(argv)
        if word is not None and word not in HANDLERS and \
                word not in OPERATOR_FALLBACK.reserved():
            check_operator_word(word, parser)
            return run_operator_command(argv)
        args = parser.parse_args(argv)
        setup_logging(args.verbose)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        handler = HANDLERS.get(args.command) or OPERATOR_FALLBACK.handler(args.command)
        return handler(args)
    except UsageExit as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"backchannel: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ServerError as exc:
        print(f"backchannel: server: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BackchannelError as exc:
        print(f"backchannel: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `backchannel config check | head`: the reader left, not an error
        # As the Python docs advise: point stdout at devnull so the flush at exit is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
