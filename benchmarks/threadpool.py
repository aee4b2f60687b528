"""Child process: the original thread-pool design, as the pipeline benchmark's comparison.

N threads each take one event from a queue and make blocking calls in sequence: the
geocoder (Nominatim-style GET), the CRM (JSON POST), the mailing list (JSON POST), the
site's XML-RPC callback, then three blocking publishes (result, signups feed, activity
feed). No durable store, no retries, no limits: the design backchannel replaces. The
XMPP session itself stays on an asyncio loop (slixmpp must only be called from its
loop); threads hand their publishes to it and block on the answer, as a synchronous
XMPP client would.

    python -m benchmarks.threadpool CONFIG SERVICES_URL SITE_URL [--threads 16]

Prints ``ready`` once subscribed to the events node; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import signal
import threading
import urllib.parse
import urllib.request
import xmlrpc.client
from typing import Any
from xml.etree import ElementTree as ET

from backchannel import config
from pubsub.client import NS_EVENT, PubSub
from pubsub.connection import XmppConnection
from pubsub.envelope import decode, make_event
from pubsub.publisher import Publisher

TIMEOUT = 10.0


def _post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(  # noqa: S310 - loopback fake services only
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


async def serve(config_path: str, services: str, site: str, threads: int) -> None:
    settings = config.load(config_path)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    inbox: queue.Queue[str | None] = queue.Queue()
    nodes = settings.nodes
    errors = 0

    conn = XmppConnection(settings.xmpp, settings.account("worker"), resource="threadpool")
    await conn.start()
    pubsub = PubSub(conn, settings.xmpp.pubsub_service)
    publisher = Publisher(pubsub)

    def on_message(message: ET.Element) -> None:
        items = message.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items")
        if items is None or items.get("node") != nodes.events:
            return
        for item in items.findall(f"{{{NS_EVENT}}}item"):
            payload = next(iter(item), None)
            if payload is not None and payload.text:
                inbox.put(payload.text)

    def handle(doc: str) -> None:
        event = decode(doc)
        data = event.data if isinstance(event.data, dict) else {}
        query = urllib.parse.urlencode({"q": data.get("address", ""), "format": "json",
                                        "limit": 1})
        places = _get_json(f"{services}/geocoder/search?{query}")
        crm = _post_json(f"{services}/crm/contacts",
                         {"external_id": data.get("user_id"), "email": data.get("email"),
                          "name": data.get("name")})
        member = _post_json(f"{services}/lists/news/members",
                            {"email": data.get("email"), "name": data.get("name")})
        place = places[0] if places else {}
        result = {"geocode": {"display_name": place.get("display_name", ""),
                              "lat": place.get("lat", ""), "lon": place.get("lon", "")},
                  "crm": crm, "mailing_list": member}
        proxy = xmlrpc.client.ServerProxy(f"{site}/xmlrpc", allow_none=False)
        proxy.backchannel.result(event.id, event.type, result)
        outputs = [
            (nodes.results, make_event("backchannel.result", event.source, result,
                                       subject=event.id)),
            (nodes.feed("signups"), make_event(
                "backchannel.feed.signup", event.source,
                {"name": data.get("name"), "where": place.get("display_name", "")},
                subject=event.id)),
            (nodes.feed("activity"), make_event(
                "backchannel.feed.activity", event.source,
                {"line": f"{event.type} {data.get('name')}"}, subject=event.id)),
        ]
        for node, out in outputs:
            asyncio.run_coroutine_threadsafe(publisher.publish(node, out), loop).result(60)

    def work() -> None:
        nonlocal errors
        while (doc := inbox.get()) is not None:
            try:
                handle(doc)
            except Exception as exc:  # counted and shown: a baseline, not a product
                errors += 1
                if errors <= 3:
                    print(f"threadpool: event failed: {exc!r}", flush=True)

    pool = [threading.Thread(target=work, name=f"pool-{i}", daemon=True)
            for i in range(threads)]
    for thread in pool:
        thread.start()
    conn.on_message(f"{{jabber:client}}message/{{{NS_EVENT}}}event/{{{NS_EVENT}}}items",
                    on_message, name="threadpool")
    await pubsub.subscribe(nodes.events, conn.bare_jid)
    print("ready", flush=True)
    await stop.wait()
    for _ in pool:
        inbox.put(None)

    def join_all() -> None:
        for thread in pool:
            thread.join(5)

    await asyncio.to_thread(join_all)
    await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("services")
    parser.add_argument("site")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(serve(args.config, args.services, args.site, args.threads))


if __name__ == "__main__":
    main()
