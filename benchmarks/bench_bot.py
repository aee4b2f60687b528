"""Round-trip latency of the bot's ``status`` against a bare slixmpp echo bot, same run.

The claim under test: the bot adds little to what XMPP itself costs. A client (account
``operator``) sends a chat message and waits for the answer, sequentially, ``--requests``
times against each of:

- a bare slixmpp echo bot (account ``worker``, resource ``echo``): it sends the body
  back, the least any chat bot can do;
- the same echo on our :class:`~pubsub.connection.XmppConnection` (account ``gateway``):
  what every backchannel component pays for its connection (XEP-0198 acks, the PubSub
  plugin's stanza matchers), before any bot logic;
- our bot (``start_bot``, account ``bot``), asked ``status``: rate limit, parsing, role
  check, audit (log + SQLite row), the status view, XEP-0393 rendering, reply.

Both run in this process on one event loop against one managed Prosody in a temporary
folder, in alternating blocks after a discarded warm-up. Prints p50/p99 of each and the
ratio of the p50s (goal <= 1.5).

    .venv/bin/python benchmarks/bench_bot.py [--requests 200] [--block 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import slixmpp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backchannel import config  # noqa: E402
from backchannel.app import Runtime, start_components  # noqa: E402
from backchannel.localserver import config_toml, managed_server  # noqa: E402
from pubsub.connection import XmppConnection  # noqa: E402

GOAL = 1.5


class EchoBot:
    """The baseline: slixmpp's own idiom, nothing else."""

    def __init__(self, settings: config.Settings) -> None:
        account = settings.account("worker")
        self.client = slixmpp.ClientXMPP(f"{account.bare}/echo", account.password.reveal())
        c = self.client
        c.enable_starttls = False
        c.enable_direct_tls = False
        c.enable_plaintext = True
        c.register_plugin("feature_mechanisms")
        c.plugin["feature_mechanisms"].unencrypted_plain = True
        self.settings = settings
        self.ready = asyncio.Event()
        c.add_event_handler("session_start", self._start)
        c.add_event_handler("message", self._echo)

    def _start(self, _: Any) -> None:
        self.client.send_presence()
        self.ready.set()

    def _echo(self, msg: Any) -> None:
        if msg["type"] in ("chat", "normal") and msg["body"]:
            msg.reply(msg["body"]).send()

    async def start(self) -> None:
        self.client.connect(host=self.settings.xmpp.host, port=self.settings.xmpp.port)
        await asyncio.wait_for(self.ready.wait(), 15)

    async def close(self) -> None:
        await self.client.disconnect(wait=2.0)


class ConnEcho:
    """The echo again, on the connection wrapper every component uses."""

    def __init__(self, settings: config.Settings) -> None:
        self.conn = XmppConnection(settings.xmpp, settings.account("gateway"), resource="echo")
        self.conn.on_message("{jabber:client}message/{jabber:client}body", self._echo, "echo")

    def _echo(self, xml: ET.Element) -> None:
        if xml.get("type") == "chat":
            self.conn.send_message(xml.get("from", ""), xml.findtext("{jabber:client}body") or "")


class Asker:
    """Sends one message at a time and waits for the answer."""

    def __init__(self, conn: XmppConnection) -> None:
        self.conn = conn
        self.waiting: asyncio.Future[str] | None = None
        self.expect = ""
        conn.on_message("{jabber:client}message/{jabber:client}body", self._on, "bench")

    def _on(self, xml: ET.Element) -> None:
        if self.waiting is not None and not self.waiting.done() and \
                xml.get("from", "").startswith(self.expect):
            self.waiting.set_result(xml.findtext("{jabber:client}body") or "")

    async def ask(self, to: str, body: str) -> float:
        self.waiting = asyncio.get_running_loop().create_future()
        self.expect = to
        start = time.perf_counter()
        self.conn.send_message(to, body)
        await asyncio.wait_for(self.waiting, 10)
        return (time.perf_counter() - start) * 1000.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(requests: int, block: int, folder: Path) -> int:
    server = managed_server("prosody", folder / "server")
    state = server.start()
    try:
        settings = config.loads(config_toml(state, var_dir=str(folder / "var"), gateway_port=0))
        settings = replace(settings, bot=replace(settings.bot, rate_limit_per_minute=100000))
        runtime = Runtime(settings)
        async with contextlib.AsyncExitStack() as stack:
            await start_components(runtime, stack, ["bot"])
            echo = EchoBot(settings)
            await echo.start()
            stack.push_async_callback(echo.close)
            conn_echo = ConnEcho(settings)
            await conn_echo.conn.start()
            stack.push_async_callback(conn_echo.conn.close)
            conn = XmppConnection(settings.xmpp, settings.account("operator"), resource="bench")
            await conn.start()
            stack.push_async_callback(conn.close)
            asker = Asker(conn)
            targets = {"echo": (str(echo.client.boundjid), "status"),
                       "conn": (conn_echo.conn.jid, "status"),
                       "bot": (runtime.bot.conn.jid, "status")}
            reply = ""
            for jid, body in targets.values():  # warm-up, discarded
                for _ in range(20):
                    await asker.ask(jid, body)
            samples: dict[str, list[float]] = {name: [] for name in targets}
            while len(samples["bot"]) < requests:
                for name, (jid, body) in targets.items():
                    for _ in range(min(block, requests - len(samples[name]))):
                        samples[name].append(await asker.ask(jid, body))
            assert asker.waiting is not None
            reply = asker.waiting.result()
    finally:
        server.stop()
    print(f"{requests} sequential round trips each, same process, same Prosody "
          f"({state.kind} on 127.0.0.1:{state.c2s_port})")
    print(f"{'':30}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}")
    for name, label in (("echo", "bare slixmpp echo bot"), ("conn", "echo on our XmppConnection"),
                        ("bot", "backchannel `status`")):
        v = samples[name]
        print(f"{label:30}{pct(v, 0.5):8.2f}{pct(v, 0.99):8.2f}{max(v):8.2f}")
    ratio = pct(samples["bot"], 0.5) / pct(samples["echo"], 0.5)
    print(f"p50 ratio bot/echo: {ratio:.2f} (goal <= {GOAL}); "
          f"p99 ratio: {pct(samples['bot'], 0.99) / pct(samples['echo'], 0.99):.2f}")
    print(f"p50 ratio bot/echo-on-XmppConnection: "
          f"{pct(samples['bot'], 0.5) / pct(samples['conn'], 0.5):.2f}")
    print(f"last status reply: {len(reply)} characters")
    return 0 if ratio <= GOAL else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--block", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-bot-") as tmp:
        return asyncio.run(bench(args.requests, args.block, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
