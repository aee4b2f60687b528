"""Node bootstrap: create or verify the design's nodes with an explicit configuration.

Why explicit: server defaults differ wildly (Openfire keeps 1 item and does not persist
it; Prosody keeps 20; ejabberd 1000 and rejects fields it does not know). We send only
the fields the server advertises, read the configuration back, and report what the
server accepted, adjusted, ignored or refused. Running it twice changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from backchannel.config import NodeNames, Settings
from backchannel.errors import XmppRefused
from pubsub.client import PubSub

log = logging.getLogger(__name__)

FALLBACK_MAX_ITEMS = (1000, 256, 100)


@dataclass
class NodeReport:
    node: str
    action: str = "unchanged"  # created | reconfigured | unchanged | failed
    accepted: dict[str, str] = field(default_factory=dict)
    adjusted: dict[str, tuple[str, str]] = field(default_factory=dict)  # var -> (wanted, got)
    ignored: list[str] = field(default_factory=list)
    granted: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def lines(self) -> list[str]:
        out = [f"{self.node}: {self.action}" + (f" ({self.error})" if self.error else "")]
        for var, (wanted, got) in self.adjusted.items():
            out.append(f"  server adjusted {var}: wanted {wanted}, has {got}")
        if self.ignored:
            out.append(f"  server does not advertise (not sent): {', '.join(self.ignored)}")
        for jid, aff in self.granted.items():
            out.append(f"  granted {aff} to {jid}")
        return out


def desired_config(nodes: NodeNames, node: str) -> dict[str, str]:
    is_feed = node.startswith(nodes.feed_prefix)
    return {
        "pubsub#persist_items": "1",
        "pubsub#max_items": str(nodes.max_items),
        "pubsub#access_model": nodes.feed_access if is_feed else "whitelist",
        "pubsub#publish_model": "publishers",
        "pubsub#send_last_published_item": "never",
        "pubsub#deliver_payloads": "1",
        "pubsub#notify_retract": "0",
    }


def _same(var: str, wanted: str, got: list[str]) -> bool:
    value = got[0] if got else ""
    if var == "pubsub#persist_items" or var.endswith(("deliver_payloads", "notify_retract")):
        return (value in ("1", "true")) == (wanted in ("1", "true"))
    return value == wanted


async def bootstrap_node(
    ps: PubSub, node: str, wanted: dict[str, str], advertised: set[str] | None,
    affiliations: Mapping[str, str],
) -> NodeReport:
    report = NodeReport(node)
    send = dict(wanted)
    if advertised is not None:
        report.ignored = sorted(v for v in send if v not in advertised)
        send = {k: v for k, v in send.items() if k in advertised}
    try:
        current = await ps.node_config(node)
    except XmppRefused as exc:
        if exc.condition != "item-not-found":
            report.action, report.error = "failed", f"cannot read config: {exc}"
            return report
        current = None
    if current is None:
        await _create(ps, node, send, report)
        if report.action == "failed":
            return report
        current = await ps.node_config(node)
    else:
        differing = {k: v for k, v in send.items() if k in current and not _same(k, v,
                                                                                 current[k])}
        if differing:
            try:
                await ps.configure(node, send)
                report.action = "reconfigured"
            except XmppRefused as exc:
                send = await _retry_smaller(ps.configure, node, send, exc, report)
                if report.action != "failed":
                    report.action = "reconfigured"
            current = await ps.node_config(node)
    for var, value in wanted.items():
        if var not in current:
            continue
        if _same(var, value, current[var]):
            report.accepted[var] = value
        else:
            report.adjusted[var] = (value, ",".join(current[var]))
    if report.action != "failed" and affiliations:
        try:
            existing = await ps.affiliations(node)
            missing = {j: a for j, a in affiliations.items() if existing.get(j) not in (a, "owner")}
            if missing:
                await ps.set_affiliations(node, missing)
                report.granted = missing
        except XmppRefused as exc:
            report.error = f"affiliations refused: {exc}"
    return report


async def _create(ps: PubSub, node: str, send: dict[str, str], report: NodeReport) -> None:
    try:
        await ps.create(node, send)
        report.action = "created"
    except XmppRefused as exc:
        if exc.condition == "conflict":  # created meanwhile by someone else
            report.action = "unchanged"
            return
        await _retry_smaller(ps.create, node, send, exc, report)
        if report.action != "failed":
            report.action = "created"


async def _retry_smaller(
    op: Callable[[str, Mapping[str, str | list[str]]], Awaitable[None]], node: str,
    send: dict[str, str], exc: XmppRefused, report: NodeReport,
) -> dict[str, str]:
    """ejabberd refuses max_items above its cap: retry with smaller values, then report."""
    if exc.condition not in ("not-acceptable", "resource-constraint", "bad-request",
                             "policy-violation") or "pubsub#max_items" not in send:
        report.action, report.error = "failed", str(exc)
        return send
    for size in FALLBACK_MAX_ITEMS:
        if int(send["pubsub#max_items"]) <= size:
            continue
        attempt = {**send, "pubsub#max_items": str(size)}
        try:
            await op(node, attempt)
            log.warning("%s: server refused max_items=%s; using %d", node,
                        send["pubsub#max_items"], size)
            return attempt
        except XmppRefused as again:
            exc = again
    report.action, report.error = "failed", str(exc)
    return send


async def bootstrap(
    ps: PubSub, settings: Settings, *, publishers: Mapping[str, Iterable[str]] | None = None,
    readers: Iterable[str] = (),
) -> list[NodeReport]:
    """Create/verify every node of ``settings.nodes``; grant publishers and readers.

    ``publishers`` maps node -> JIDs allowed to publish; ``readers`` get ``member`` on
    whitelisted nodes. By default they come from the configured accounts (see
    :func:`default_affiliations`).
    """
    if publishers is None:
        publishers, readers = default_affiliations(settings)
    readers = list(readers)
    try:
        advertised: set[str] | None = set(await ps.default_config())
        if not advertised:
            advertised = None
    except XmppRefused:
        advertised = None
    reports = []
    for node in settings.nodes.all():
        wanted = desired_config(settings.nodes, node)
        affs = {j: "publisher" for j in publishers.get(node, ())}
        if wanted["pubsub#access_model"] == "whitelist":
            for jid in readers:
                affs.setdefault(jid, "member")
        report = await bootstrap_node(ps, node, wanted, advertised, affs)
        for line in report.lines():
            log.info("bootstrap %s", line)
        reports.append(report)
    return reports


def default_affiliations(settings: Settings) -> tuple[dict[str, list[str]], list[str]]:
    """Who publishes where, from the configured accounts and sites."""
    def bare(name: str) -> list[str]:
        acc = settings.accounts.get(name)
        return [acc.bare] if acc else []

    nodes = settings.nodes
    site_publishers = [j for s in settings.sites for j in s.xmpp_publishers]
    publishers: dict[str, list[str]] = {
        nodes.events: bare("gateway") + bare("site") + site_publishers,
        nodes.results: bare("worker"),
        nodes.deadletters: bare("worker"),
    }
    for feed in nodes.feeds:
        publishers[nodes.feed(feed)] = bare("worker")
    readers = [a.bare for n, a in settings.accounts.items() if n != "admin"]
    return publishers, readers
