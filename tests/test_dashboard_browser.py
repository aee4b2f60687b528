"""The dashboard in a real headless Chromium: signups appear on the map, lines in the stream.

Drives Debian's Chromium through Playwright (its own browser download is not used), with
the whole pipeline running: worker and gateway against the managed server. Saves a
screenshot to ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from backchannel.app import Runtime, start_components
from backchannel.localserver import ServerState
from tests.pipeline_harness import Pipeline

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.async_api")


async def test_dashboard_shows_signups_on_the_map_and_activity_lines(
    server_state: ServerState, bootstrapped: Any, tmp_path: Path
) -> None:
    async with Pipeline(server_state, tmp_path, geocoder="offline") as p, \
            contextlib.AsyncExitStack() as stack:
        runtime = Runtime(p.settings)
        await start_components(runtime, stack, ["worker", "gateway"])
        url = runtime.gateway.url
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update",
                      "--disable-sync"])
            try:
                page = await browser.new_page(viewport={"width": 1600, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{url}/")
                # The feeds are open before anything is published: what appears is live.
                await page.wait_for_function(
                    "document.querySelectorAll('.activity-line').length === 0")
                events = p.registrations(12, ["Paris, France", "Tokyo, Japan",
                                              "Nairobi, Kenya", "Lima, Peru"], prefix="dash")
                await p.publish_many(events)
                await page.wait_for_function(
                    "document.querySelectorAll('.signup-marker').length >= 12",
                    timeout=30_000)
                await page.wait_for_function(
                    "document.querySelectorAll('.activity-line').length >= 12",
                    timeout=30_000)
                lines = await page.locator(".activity-line").all_inner_texts()
                assert any("User" in line for line in lines), lines[:3]
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
                assert not errors, errors
            finally:
                await browser.close()
