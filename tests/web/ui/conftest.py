"""Dashboard fixtures: the real app over HTTP in process, and a real Chromium driven by
Playwright against `live_server` (tests/web/conftest.py). Signing in: tests/support/ui.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import BrowserContext, async_playwright

from paku_iot.server.service import Service
from paku_iot.web.app import create_app
from tests.support import require
from tests.support.ui import ARTIFACTS

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
async def ui(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, with no credentials: a browser that has not signed in."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service)), base_url="http://paku.test"
    ) as client:
        yield client


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium (`make install` puts it there): missing fails in CI, skips locally."""
    require(CHROMIUM.exists(), f"Chromium is not installed at {CHROMIUM} (make install)")
    ARTIFACTS.mkdir(exist_ok=True)
    return str(CHROMIUM)


@pytest.fixture
async def browser_context(chromium: str, live_server: str) -> AsyncIterator[BrowserContext]:
    """A fresh Chromium context (no cookies) whose relative URLs go to the live server."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, headless=True)
        context = await browser.new_context(
            base_url=live_server, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            await context.close()
            await browser.close()
