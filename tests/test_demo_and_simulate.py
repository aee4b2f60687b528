"""The newcomer's commands, run as a newcomer would: ``demo --check`` and ``simulate``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from backchannel.localserver import ServerState
from tests.pipeline_harness import Pipeline

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "backchannel.cli"]


def test_demo_check_runs_events_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run([*CLI, "demo", "--check", "--events", "30", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: 30 events" in proc.stdout
    assert "stopped cleanly" in proc.stdout
    # The managed server is stopped again: its port is free.
    assert "server" in {p.name for p in tmp_path.iterdir()}


def test_demo_check_rejects_bad_arguments() -> None:
    proc = subprocess.run([*CLI, "demo", "--check", "--events", "0"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "--events and --rate must be positive" in proc.stderr


async def test_simulate_publishes_to_the_events_node(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    async with Pipeline(server_state, tmp_path) as p:
        proc = subprocess.run(
            [*CLI, "simulate", "-c", str(p.config_file), "--count", "25", "--rate", "100"],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "sent 25 events" in proc.stdout
        items = await p.publisher.pubsub.items(p.settings.nodes.events, max_items=100)
        assert len(items) == 25


def test_simulate_needs_a_gateway_for_http() -> None:
    proc = subprocess.run([*CLI, "simulate", "--transport", "http"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "needs --gateway URL" in proc.stderr
