"""Shared fixtures: one real XMPP server per test session, on free loopback ports.

The server is the same managed server the demo runs (``backchannel.localserver``).
``--xmpp-server=ejabberd`` runs the integration tests against ejabberd instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from backchannel import config
from backchannel.localserver import ManagedServer, ServerState, config_toml, managed_server
from pubsub.client import PubSub
from pubsub.connection import XmppConnection

if TYPE_CHECKING:
    from gateway.app import Gateway


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--xmpp-server", default=os.environ.get("BACKCHANNEL_TEST_SERVER",
                                                             "prosody"),
                     choices=["prosody", "ejabberd"], help="XMPP server for integration tests")
    parser.addoption("--long", action="store_true",
                     default=os.environ.get("BACKCHANNEL_TEST_LONG", "") not in ("", "0"),
                     help="long mode for fault, fuzz and soak-style tests: real outage "
                          "lengths and >= 10,000 fuzz cases per target (not for CI)")


@pytest.fixture(scope="session")
def server_kind(pytestconfig: pytest.Config) -> str:
    return str(pytestconfig.getoption("--xmpp-server"))


@pytest.fixture(scope="session")
def long_mode(pytestconfig: pytest.Config) -> bool:
    """True with ``--long`` (or BACKCHANNEL_TEST_LONG=1): full-length fault and fuzz runs."""
    return bool(pytestconfig.getoption("--long"))


@pytest.fixture(scope="session")
def managed(server_kind: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[ManagedServer]:
    folder = tmp_path_factory.mktemp(f"{server_kind}-server")
    server = managed_server(server_kind, folder)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def server_state(managed: ManagedServer) -> ServerState:
    state = managed.load_state()
    assert state is not None
    return state


@pytest.fixture(scope="session")
def settings(server_state: ServerState, tmp_path_factory: pytest.TempPathFactory
             ) -> config.Settings:
    var = tmp_path_factory.mktemp("var")
    return config.loads(config_toml(server_state, var_dir=str(var), gateway_port=0))


@pytest.fixture(scope="session")
async def bootstrapped(settings: config.Settings) -> config.Settings:
    """Nodes created and affiliations granted once per session."""
    from pubsub.nodes import bootstrap

    async with XmppConnection(settings.xmpp, settings.account("admin"), resource="boot") as conn:
        reports = await bootstrap(PubSub(conn, settings.xmpp.pubsub_service), settings)
    failed = [r for r in reports if r.action == "failed"]
    assert not failed, [r.lines() for r in failed]
    return settings


@pytest.fixture
async def connect(settings: config.Settings) -> AsyncIterator[object]:
    """``await connect("worker")`` gives a started connection, closed after the test."""
    opened: list[XmppConnection] = []

    async def _connect(account: str, resource: str = "test") -> XmppConnection:
        conn = XmppConnection(settings.xmpp, settings.account(account), resource=resource)
        await conn.start()
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        await conn.close()


@pytest.fixture
def var_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
async def offline_gateway() -> AsyncIterator[Gateway]:
    """A gateway (sites shop, blog, pull) whose XMPP session never comes up: ingest
    answers 503 after validation, so auth and parsing are tested without a server."""
    from backchannel.config import GatewaySettings, Settings
    from backchannel.metrics import Metrics
    from gateway.app import Gateway
    from tests.gateway_support import BLOG, NO_SECRET, SHOP

    settings = Settings(sites=(SHOP, BLOG, NO_SECRET), gateway=GatewaySettings(port=0))
    conn = XmppConnection(settings.xmpp,
                          config.Account("gateway@localhost", config.Secret("x")))
    gateway = Gateway(settings, conn, metrics=Metrics())
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.close()
        await conn.close()
