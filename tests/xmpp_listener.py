"""A listener that speaks just enough XMPP to see what a client does *before* logging in.

The managed servers run plaintext on loopback, so they cannot show what our connection
does with TLS. This one can: it offers STARTTLS (or starts TLS at once, like XEP-0368
direct TLS) with a certificate of the test's choosing, or offers no TLS at all, and
records every byte the client sends and how the TLS handshake ended. It never lets a
login succeed: an ``<auth>`` gets ``<not-authorized/>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

STREAM_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' id='fake' from='{domain}' version='1.0'>"
)
MECHANISMS = (
    "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    "<mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms>"
)
STARTTLS = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
PROCEED = "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
NOT_AUTHORIZED = ("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>"
                  "</failure>")


def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate (and key) for DNS name ``name``, made by openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}"],
        check=True, capture_output=True, timeout=30)
    return cert, key


@dataclass
class Listener:
    """What one fake server saw. ``mode``: "none" (no TLS offered), "starttls", "direct"."""

    mode: str
    cert: tuple[Path, Path] | None = None
    domain: str = "localhost"
    received: bytearray = field(default_factory=bytearray)
    tls_up: asyncio.Event = field(default_factory=asyncio.Event)
    tls_failed: asyncio.Event = field(default_factory=asyncio.Event)
    tls_error: str = ""
    auth_seen: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    def _context(self) -> ssl.SSLContext:
        assert self.cert is not None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.cert)
        return ctx

    async def _read_until(self, reader: asyncio.StreamReader, marker: bytes,
                          timeout: float = 10.0) -> bool:
        start = len(self.received)
        async with asyncio.timeout(timeout):
            while marker not in self.received[start:]:
                chunk = await reader.read(4096)
                if not chunk:
                    return False
                self.received += chunk
                if b"<auth" in chunk:
                    self.auth_seen.set()
        return True

    async def _tls(self, writer: asyncio.StreamWriter) -> bool:
        try:
            await writer.start_tls(self._context())
        except (ssl.SSLError, OSError, ConnectionError) as exc:
            self.tls_error = repr(exc)
            self.tls_failed.set()
            return False
        self.tls_up.set()
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = STREAM_HEADER.format(domain=self.domain)
        try:
            if self.mode == "direct" and not await self._tls(writer):
                return
            if not await self._read_until(reader, b">"):
                return
            if self.mode == "starttls":
                writer.write(f"{header}<stream:features>{STARTTLS}</stream:features>".encode())
                await writer.drain()
                if not await self._read_until(reader, b"<starttls"):
                    return
                writer.write(PROCEED.encode())
                await writer.drain()
                if not await self._tls(writer):
                    return
                if not await self._read_until(reader, b">"):
                    return
            writer.write(f"{header}<stream:features>{MECHANISMS}</stream:features>".encode())
            await writer.drain()
            if await self._read_until(reader, b"</auth>", timeout=5.0):
                writer.write(NOT_AUTHORIZED.encode())
                await writer.drain()
                await self._read_until(reader, b"</stream:stream>", timeout=2.0)
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
