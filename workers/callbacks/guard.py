"""Where a callback may go: the site's registered endpoint, on a public address.

A callback URL comes from configuration, but the result it carries was shaped by
events from outside, and the worker sits inside our network: a careless endpoint
("http://169.254.169.254/...", a name that resolves to 10.0.0.5) would turn the
responder into a proxy for server-side request forgery. So, before every request:

- the URL must be exactly the registered one (scheme, user info, host, port, path and
  query, after normalisation), and http or https;
- the host's addresses must all be global (``ipaddress.ip_address(a).is_global``),
  unless the site's registration says ``allow_private`` (the demo and tests on loopback).

DNS can change between that check and the connection (rebinding), so
:class:`GuardedResolver` makes aiohttp apply the same address rule when it resolves
for real. aiohttp skips its resolver for IP literals, which is why
:func:`check_destination` checks literals itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from backchannel.errors import CallbackError, CallbackRefused

log = logging.getLogger(__name__)

ALLOWED_SCHEMES = ("http", "https")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def describe(url: URL | str) -> str:
    """``scheme://host:port`` of a URL: enough to say where, never a path token or password."""
    u = URL(url) if isinstance(url, str) else url
    host = u.host or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{u.scheme or '?'}://{host}:{u.port}" if u.port else f"{u.scheme or '?'}://{host}"


def _key(url: URL) -> tuple[object, ...]:
    return (
        url.scheme.lower(),
        url.user,
        url.password,
        (url.host or "").lower().rstrip("."),
        url.port,
        url.raw_path or "/",
        url.raw_query_string,
    )


def same_endpoint(url: str, allowed_url: str) -> bool:
    """True if both URLs name the same endpoint (the fragment, never sent, is ignored)."""
    try:
        return _key(URL(url)) == _key(URL(allowed_url))
    except (ValueError, TypeError):
        return False


def is_allowed_address(address: str | IPAddress, *, allow_private: bool) -> bool:
    """True if a callback may connect to ``address``."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    # ::ffff:10.0.0.1 reaches 10.0.0.1; older Pythons call the mapped form global.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return allow_private or ip.is_global


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


async def check_destination(url: str, *, allowed_url: str, allow_private: bool) -> None:
    """Refuse (:class:`CallbackRefused`) a callback to anywhere but the registered endpoint.

    A host that does not resolve raises a plain :class:`CallbackError`: DNS failures
    are often temporary, so that one is worth retrying.
    """
    try:
        target = URL(url)
    except (ValueError, TypeError) as exc:
        raise CallbackRefused("callback URL is not a valid URL") from exc
    if target.scheme.lower() not in ALLOWED_SCHEMES:
        raise CallbackRefused(
            f"callback scheme {target.scheme!r} is not allowed (only http and https)"
        )
    if not target.host:
        raise CallbackRefused("callback URL has no host")
    if not same_endpoint(url, allowed_url):
        raise CallbackRefused(
            f"destination {describe(target)} is not the site's registered callback endpoint"
        )
    host = target.host
    literal = _literal(host)
    if literal is not None:
        if not is_allowed_address(literal, allow_private=allow_private):
            raise CallbackRefused(
                f"callback to {describe(target)} refused: {literal} is not a public address "
                "(set allow_private for this site to permit it)"
            )
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CallbackError(
            f"cannot resolve callback host {host!r}: {exc.strerror or exc}"
        ) from exc
    if not infos:
        raise CallbackError(f"callback host {host!r} resolves to no address")
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if not is_allowed_address(address, allow_private=allow_private):
            raise CallbackRefused(
                f"callback to {describe(target)} refused: {host} resolves to {address}, "
                "which is not a public address (set allow_private for this site to permit it)"
            )


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses non-global addresses at connection time.

    Hosts whose site registration allows private addresses are named with
    :meth:`allow_private`; everything else must resolve to global addresses only.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else ThreadedResolver()
        self._private_ok: set[str] = set()

    def allow_private(self, host: str) -> None:
        """Let ``host`` resolve to private or loopback addresses (its site allows it)."""
        self._private_ok.add(host.lower().rstrip("."))

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allow = host.lower().rstrip(".") in self._private_ok
        for result in results:
            if not is_allowed_address(result["host"], allow_private=allow):
                log.warning("refused to connect to %s: resolves to %s", host, result["host"])
                raise CallbackRefused(
                    f"callback host {host} resolves to {result['host']}, which is not a "
                    "public address"
                )
        return results

    async def close(self) -> None:
        await self._inner.close()
